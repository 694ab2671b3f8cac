//! Two teams, a member key each: team B's key gets exactly what a sandbox that does not
//! exist gets, for every public route on a sandbox of team A, HTTP and gRPC alike. The
//! routes are listed from the router (HTTP) and from the service's descriptor (gRPC),
//! so a route added later fails this test until it is classified and checked here.
//! Routes on the collection (list, prune, create, admission) are checked one by one;
//! every other route must not name A's sandbox to B.

use std::collections::BTreeSet;
use std::time::Duration;

use prost::Message;
use serde_json::{Value, json};

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_testkit::{Api, TestFleet, api_channel, id_of, keyed};
use tonic::transport::Channel;

/// An id no sandbox has.
const GHOST: &str = "sbx-00000000deadbeef";

/// Routes on the sandbox collection, each checked by its own assertions below.
const COLLECTION: [(&str, &str); 4] = [
    ("POST", "/api/v1/sandboxes"),
    ("GET", "/api/v1/sandboxes"),
    ("DELETE", "/api/v1/sandboxes"),
    ("POST", "/api/v1/sandboxes/admission"),
];

/// Routes that reach no particular sandbox: the fleet, keys, teams and the API itself.
const ELSEWHERE: [(&str, &str); 46] = [
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/live"),
    ("GET", "/api/v1/ready"),
    ("GET", "/api/v1/providers"),
    ("POST", "/api/v1/providers/test"),
    ("GET", "/api/v1/providers/{name}"),
    ("GET", "/api/v1/workers"),
    ("GET", "/api/v1/workers/{id}"),
    ("DELETE", "/api/v1/workers/{id}"),
    ("POST", "/api/v1/workers/{id}/revoke"),
    ("POST", "/api/v1/workers/{id}/cordon"),
    ("POST", "/api/v1/workers/{id}/drain"),
    ("POST", "/api/v1/workers/{id}/undrain"),
    ("POST", "/api/v1/workers/{id}/uncordon"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/keys"),
    ("GET", "/api/v1/keys"),
    ("GET", "/api/v1/keys/{id}"),
    ("DELETE", "/api/v1/keys/{id}"),
    // SSH keys are held to their owner's team (ssh.rs tests that)
    ("GET", "/api/v1/ssh-keys"),
    ("POST", "/api/v1/ssh-keys"),
    ("DELETE", "/api/v1/ssh-keys/{id}"),
    // secrets are held to the caller's team (secrets.rs tests that)
    ("GET", "/api/v1/secrets"),
    ("PUT", "/api/v1/secrets/{name}"),
    ("DELETE", "/api/v1/secrets/{name}"),
    // templates are held to the caller's team (templates.rs tests that)
    ("GET", "/api/v1/templates"),
    ("POST", "/api/v1/templates"),
    ("GET", "/api/v1/templates/{name}"),
    ("PUT", "/api/v1/templates/{name}"),
    ("DELETE", "/api/v1/templates/{name}"),
    ("POST", "/api/v1/templates/{name}/spawn"),
    ("POST", "/api/v1/templates/{name}/prebuild"),
    ("POST", "/api/v1/images/push"),
    ("POST", "/api/v1/teams"),
    ("GET", "/api/v1/teams"),
    ("GET", "/api/v1/teams/{name}"),
    ("PATCH", "/api/v1/teams/{name}"),
    ("DELETE", "/api/v1/teams/{name}"),
    ("POST", "/api/v1/teams/{name}/users"),
    ("GET", "/api/v1/teams/{name}/users"),
    ("DELETE", "/api/v1/teams/{name}/users/{user}"),
    ("GET", "/api/v1/quotas/summary"),
    ("GET", "/api/v1/pool/status"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/status"),
];

/// The audit log's routes: a cluster admin's, refused to a member.
const AUDIT: [(&str, &str); 2] = [("GET", "/api/v1/audit"), ("GET", "/api/v1/audit/verify")];

/// What a call answered, with the sandbox id it was about replaced and the request's
/// own id left out, so the answers for two different ids can be compared.
fn answer(status: u16, body: &Value, id: &str) -> (u16, String) {
    let mut body = body.clone();
    if let Some(fields) = body.as_object_mut() {
        fields.remove("request_id");
    }
    (status, body.to_string().replace(id, "<id>"))
}

/// The request a route on one sandbox gets in this test.
fn sandbox_request(api: &Api, method: &str, path: &str, id: &str) -> reqwest::RequestBuilder {
    let url = path
        .replace("{id}", id)
        .replace("{session_id}", "ses-0123")
        .replace("{port}", "8000")
        .replacen("/api/v1", "", 1);
    let post = |body: Value| api.request(reqwest::Method::POST, &url).json(&body);
    match (method, path) {
        ("GET", "/api/v1/sandboxes/{id}") => api.request(reqwest::Method::GET, &url),
        ("DELETE", "/api/v1/sandboxes/{id}") => api.request(reqwest::Method::DELETE, &url),
        ("POST", "/api/v1/sandboxes/{id}/extend") => post(json!({"ttl": "20m"})),
        ("POST", "/api/v1/sandboxes/{id}/stop") | ("POST", "/api/v1/sandboxes/{id}/start") => {
            post(json!({}))
        }
        ("POST", "/api/v1/sandboxes/{id}/exec") => post(json!({"command": "echo hi"})),
        // a plain GET: the sandbox is checked before the upgrade
        ("GET", "/api/v1/sandboxes/{id}/exec/ws")
        | ("GET", "/api/v1/sandboxes/{id}/sessions")
        | ("GET", "/api/v1/sandboxes/{id}/sessions/{session_id}") => {
            api.request(reqwest::Method::GET, &url)
        }
        ("GET", "/api/v1/sandboxes/{id}/ports")
        | ("GET", "/api/v1/sandboxes/{id}/ports/{port}/ws") => {
            api.request(reqwest::Method::GET, &url)
        }
        ("PUT", "/api/v1/sandboxes/{id}/ports/{port}") => api
            .request(reqwest::Method::PUT, &url)
            .json(&json!({"public": true})),
        ("POST", "/api/v1/sandboxes/{id}/ports/{port}/link") => post(json!({"ttl": "5m"})),
        ("POST", "/api/v1/sandboxes/{id}/ssh-token") => post(json!({"ttl": "5m"})),
        ("DELETE", "/api/v1/sandboxes/{id}/sessions/{session_id}") => {
            api.request(reqwest::Method::DELETE, &format!("{url}?signal=SIGTERM"))
        }
        ("GET", "/api/v1/sandboxes/{id}/logs") => {
            api.request(reqwest::Method::GET, &format!("{url}?lines=5"))
        }
        ("GET", "/api/v1/sandboxes/{id}/events") => {
            api.request(reqwest::Method::GET, &format!("{url}?follow=false"))
        }
        ("POST", "/api/v1/sandboxes/{id}/files") => {
            post(json!({"path": "/tmp/planted", "content": "from b"}))
        }
        ("PUT", "/api/v1/sandboxes/{id}/files") => api
            .request(reqwest::Method::PUT, &format!("{url}?path=/tmp/uploaded"))
            .body("from b"),
        ("GET", "/api/v1/sandboxes/{id}/files") => {
            api.request(reqwest::Method::GET, &format!("{url}?path=/tmp/secret"))
        }
        ("DELETE", "/api/v1/sandboxes/{id}/files") => {
            api.request(reqwest::Method::DELETE, &format!("{url}?path=/tmp/secret"))
        }
        ("GET", "/api/v1/sandboxes/{id}/files/list") => {
            api.request(reqwest::Method::GET, &format!("{url}?path=/tmp"))
        }
        ("GET", "/api/v1/sandboxes/{id}/files/stat") => {
            api.request(reqwest::Method::GET, &format!("{url}?path=/tmp/secret"))
        }
        ("GET", "/api/v1/sandboxes/{id}/files/glob") => {
            api.request(reqwest::Method::GET, &format!("{url}?pattern=/tmp/*"))
        }
        ("POST", "/api/v1/sandboxes/{id}/files/move") => {
            post(json!({"old_path": "/tmp/secret", "new_path": "/tmp/stolen"}))
        }
        ("POST", "/api/v1/sandboxes/{id}/files/chmod") => {
            post(json!({"path": "/tmp/secret", "mode": "0777"}))
        }
        _ => panic!("{method} {path} is a new route on a sandbox: give it a request here"),
    }
}

/// A path of the route table with its parameters filled in, for a GET by team B.
fn filled(path: &str, worker: &str) -> String {
    path.replace("{id}", worker)
        .replace("{name}", "a")
        .replace("{user}", "alice")
        .replacen("/api/v1", "", 1)
}

/// Two teams with a member key each (read, write, exec), and a running sandbox of
/// team A holding a file.
struct Teams {
    fleet: TestFleet,
    a: Api,
    b: Api,
    a_key: String,
    b_key: String,
    sandbox: String,
}

async fn two_teams() -> Teams {
    let fleet = TestFleet::builder()
        .reap_interval(Duration::from_secs(3600))
        .start()
        .await;
    let admin = &fleet.api;
    admin.wait_ready().await;
    admin.create_team("a", json!({})).await;
    admin.create_team("b", json!({})).await;
    let a_key = admin.team_key("a", &["read", "write", "exec"]).await;
    let b_key = admin.team_key("b", &["read", "write", "exec"]).await;
    let (a, b) = (admin.with_key(&a_key), admin.with_key(&b_key));
    let sandbox = id_of(&a.create_sandbox(json!({"provider": "mock"})).await);
    let (status, body) = a
        .post(
            &format!("/sandboxes/{sandbox}/files"),
            json!({"path": "/tmp/secret", "content": "team a only"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    Teams {
        fleet,
        a,
        b,
        a_key,
        b_key,
        sandbox,
    }
}

/// Team A's sandbox is untouched: running, its file intact, nothing planted.
async fn still_intact(teams: &Teams) {
    let id = &teams.sandbox;
    let (status, body) = teams.a.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    let (status, body) = teams
        .a
        .exec(id, json!({"command": "cat /tmp/secret; ls /tmp"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let out = body["stdout"].as_str().unwrap();
    assert!(out.starts_with("team a only"), "{out}");
    assert!(
        !out.contains("planted") && !out.contains("uploaded") && !out.contains("stolen"),
        "{out}"
    );
}

#[tokio::test]
async fn every_http_route_answers_another_teams_sandbox_as_one_that_does_not_exist() {
    let teams = two_teams().await;
    let id = teams.sandbox.clone();
    let classified: BTreeSet<(&str, &str)> = COLLECTION
        .iter()
        .chain(ELSEWHERE.iter())
        .chain(AUDIT.iter())
        .copied()
        .collect();
    let worker = teams.fleet.worker(0).worker_id.clone();
    let mut checked = 0;
    for (method, path) in berth_controlplane::api::route_list() {
        let method = method.as_str();
        if path.starts_with("/api/v1/sandboxes/{id}") {
            let theirs = teams
                .b
                .send(sandbox_request(&teams.b, method, path, &id))
                .await;
            let missing = teams
                .a
                .send(sandbox_request(&teams.a, method, path, GHOST))
                .await;
            assert_eq!(
                answer(theirs.0, &theirs.1, &id),
                answer(missing.0, &missing.1, GHOST),
                "{method} {path}: team b on team a's sandbox vs a sandbox that does not exist"
            );
            assert_eq!(theirs.0, 404, "{method} {path}: {}", theirs.1);
            checked += 1;
            continue;
        }
        assert!(
            classified.contains(&(method, path)),
            "{method} {path} is a new route: classify it in this test"
        );
        if method == "GET" && !COLLECTION.contains(&(method, path)) {
            let response = teams
                .b
                .request(reqwest::Method::GET, &filled(path, &worker))
                .send()
                .await
                .unwrap();
            let text = response.text().await.unwrap();
            assert!(
                !text.contains(&id),
                "GET {path} names team a's sandbox to team b: {text}"
            );
        }
        if AUDIT.contains(&(method, path)) {
            let (status, body) = teams.b.get(&filled(path, &worker)).await;
            assert_eq!(status, 403, "a member reads the audit log: {body}");
        }
    }
    assert!(checked >= 14, "only {checked} sandbox routes checked");

    // the collection: list, prune, admission and create stay within the team
    let (status, listed) = teams.b.get("/sandboxes").await;
    assert_eq!(status, 200);
    assert!(!listed.to_string().contains(&id), "{listed}");
    let (status, listed) = teams.a.get("/sandboxes").await;
    assert_eq!(status, 200);
    assert!(listed.to_string().contains(&id), "{listed}");
    let mine = id_of(&teams.b.create_sandbox(json!({"provider": "mock"})).await);
    let (_, listed) = teams.b.get("/sandboxes").await;
    let ids: Vec<String> = listed.as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, std::slice::from_ref(&mine));
    let (status, body) = teams.b.get(&format!("/sandboxes/{mine}")).await;
    assert_eq!(
        (status, body["tenant_id"].as_str()),
        (200, Some("b")),
        "{body}"
    );
    let (status, body) = teams
        .b
        .post("/sandboxes/admission", json!({"provider": "mock"}))
        .await;
    assert_eq!(
        (status, body["active_sandboxes"].as_u64()),
        (200, Some(1)),
        "{body}"
    );

    // a sandbox of team a that expired: team b's prune leaves it, team a's takes it
    let expiring = id_of(
        &teams
            .a
            .create_sandbox(json!({"provider": "mock", "ttl": "1s"}))
            .await,
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = teams.b.delete("/sandboxes?state=expired").await;
    assert_eq!((status, body["pruned"].as_u64()), (200, Some(0)), "{body}");
    let (status, _) = teams.a.get(&format!("/sandboxes/{expiring}")).await;
    assert_eq!(status, 200, "team b's prune reached team a's sandbox");
    let (status, body) = teams.a.delete("/sandboxes?state=expired").await;
    assert_eq!((status, body["pruned"].as_u64()), (200, Some(1)), "{body}");

    // a member cannot act as another team, nor create into one
    let (status, body) = teams
        .b
        .send(
            teams
                .b
                .request(reqwest::Method::GET, &format!("/sandboxes/{id}"))
                .header("X-Tenant-ID", "a"),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("team \"b\""),
        "{body}"
    );

    still_intact(&teams).await;
    teams.fleet.stop().await;
}

/// The methods of `berth.v1.Sandboxes`, read from the descriptor the API port's
/// reflection serves.
fn sandboxes_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(berth_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    set.file
        .iter()
        .filter(|file| file.package() == "berth.v1")
        .flat_map(|file| file.service.iter())
        .filter(|service| service.name() == "Sandboxes")
        .flat_map(|service| service.method.iter().map(|m| m.name().to_owned()))
        .collect()
}

/// A gRPC call's outcome as (code, message with `id` replaced); a streaming answer
/// counts as its first message.
type Outcome = (tonic::Code, String);

fn outcome<T>(result: Result<T, tonic::Status>, id: &str) -> Outcome {
    match result {
        Ok(_) => (tonic::Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().replace(id, "<id>")),
    }
}

async fn first<T>(
    result: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    id: &str,
) -> Outcome {
    match result {
        Ok(response) => outcome(response.into_inner().message().await, id),
        Err(status) => outcome::<()>(Err(status), id),
    }
}

/// Calls `method` on sandbox `id` with `key`.
async fn grpc_call(
    client: &mut SandboxesClient<Channel>,
    method: &str,
    id: &str,
    key: &str,
) -> Outcome {
    let sandbox_id = id.to_owned();
    let file = |path: &str| pb::FileRef {
        sandbox_id: sandbox_id.clone(),
        path: path.into(),
    };
    match method {
        "Get" => outcome(
            client
                .get(keyed(
                    pb::SandboxRef {
                        id: sandbox_id.clone(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Destroy" => outcome(
            client
                .destroy(keyed(
                    pb::SandboxRef {
                        id: sandbox_id.clone(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Stop" => outcome(
            client
                .stop(keyed(
                    pb::SandboxRef {
                        id: sandbox_id.clone(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Start" => outcome(
            client
                .start(keyed(
                    pb::SandboxRef {
                        id: sandbox_id.clone(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Extend" => outcome(
            client
                .extend(keyed(
                    pb::ExtendSandboxRequest {
                        id: sandbox_id.clone(),
                        ttl: "20m".into(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Exec" | "ExecStream" => {
            let request = pb::ExecRequest {
                sandbox_id: sandbox_id.clone(),
                command: "echo hi".into(),
                ..Default::default()
            };
            if method == "Exec" {
                outcome(client.exec(keyed(request, key)).await, id)
            } else {
                first(client.exec_stream(keyed(request, key)).await, id).await
            }
        }
        "Logs" => {
            let request = pb::LogsRequest {
                sandbox_id: sandbox_id.clone(),
                lines: 5,
                follow: false,
            };
            first(client.logs(keyed(request, key)).await, id).await
        }
        "ReadFile" => first(client.read_file(keyed(file("/tmp/secret"), key)).await, id).await,
        "WriteFile" => {
            let parts = vec![
                pb::WriteFileRequest {
                    part: Some(pb::write_file_request::Part::Header(file("/tmp/planted"))),
                    mode: 0o644,
                },
                pb::WriteFileRequest {
                    part: Some(pb::write_file_request::Part::Data(b"from b".to_vec())),
                    mode: 0,
                },
            ];
            outcome(
                client
                    .write_file(keyed(futures::stream::iter(parts), key))
                    .await,
                id,
            )
        }
        "ListFiles" => outcome(client.list_files(keyed(file("/tmp"), key)).await, id),
        "StatFile" => outcome(client.stat_file(keyed(file("/tmp/secret"), key)).await, id),
        "DeleteFile" => outcome(
            client
                .delete_file(keyed(
                    pb::DeleteFileRequest {
                        sandbox_id: sandbox_id.clone(),
                        path: "/tmp/secret".into(),
                        recursive: false,
                    },
                    key,
                ))
                .await,
            id,
        ),
        "MoveFile" => outcome(
            client
                .move_file(keyed(
                    pb::MoveFileRequest {
                        sandbox_id: sandbox_id.clone(),
                        old_path: "/tmp/secret".into(),
                        new_path: "/tmp/stolen".into(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Chmod" => outcome(
            client
                .chmod(keyed(
                    pb::ChmodRequest {
                        sandbox_id: sandbox_id.clone(),
                        path: "/tmp/secret".into(),
                        mode: 0o777,
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Glob" => outcome(
            client
                .glob(keyed(
                    pb::GlobRequest {
                        sandbox_id: sandbox_id.clone(),
                        pattern: "/tmp/*".into(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "Session" => {
            let open = pb::SessionRequest {
                message: Some(pb::session_request::Message::Open(pb::SessionOpen {
                    sandbox_id: sandbox_id.clone(),
                    command: "cat /tmp/secret".into(),
                    ..Default::default()
                })),
            };
            let requests = futures::stream::iter([open]);
            first(client.session(keyed(requests, key)).await, id).await
        }
        "ListSessions" => outcome(
            client
                .list_sessions(keyed(
                    pb::ListSessionsRequest {
                        sandbox_id: sandbox_id.clone(),
                    },
                    key,
                ))
                .await,
            id,
        ),
        "KillSession" => outcome(
            client
                .kill_session(keyed(
                    pb::KillSessionRequest {
                        sandbox_id: sandbox_id.clone(),
                        session_id: "ses-0123".into(),
                        ..Default::default()
                    },
                    key,
                ))
                .await,
            id,
        ),
        "OpenPort" => {
            let open = pb::PortRequest {
                message: Some(pb::port_request::Message::Open(pb::PortOpen {
                    sandbox_id: sandbox_id.clone(),
                    port: 8000,
                    generation: 0,
                })),
            };
            let requests = futures::stream::iter([open]);
            first(client.open_port(keyed(requests, key)).await, id).await
        }
        other => panic!("berth.v1.Sandboxes/{other} is a new method: give it a call here"),
    }
}

#[tokio::test]
async fn every_grpc_method_answers_another_teams_sandbox_as_one_that_does_not_exist() {
    let teams = two_teams().await;
    let id = teams.sandbox.clone();
    let mut client = SandboxesClient::new(api_channel(&teams.fleet.cp.api_url()).await);
    let methods = sandboxes_methods();
    assert!(methods.len() >= 16, "{methods:?}");
    for method in &methods {
        match method.as_str() {
            "Create" => {
                let created = client
                    .create(keyed(
                        pb::CreateSandboxRequest {
                            provider: "mock".into(),
                            ..Default::default()
                        },
                        &teams.b_key,
                    ))
                    .await
                    .expect("team b creates")
                    .into_inner();
                assert_eq!(created.tenant_id, "b");
            }
            "List" => {
                for (key, sees) in [(&teams.b_key, false), (&teams.a_key, true)] {
                    let listed = client
                        .list(keyed(pb::ListSandboxesRequest {}, key))
                        .await
                        .unwrap()
                        .into_inner();
                    let ids: Vec<&str> = listed.sandboxes.iter().map(|s| s.id.as_str()).collect();
                    assert_eq!(ids.contains(&id.as_str()), sees, "{ids:?}");
                }
            }
            method => {
                let theirs = grpc_call(&mut client, method, &id, &teams.b_key).await;
                let missing = grpc_call(&mut client, method, GHOST, &teams.a_key).await;
                assert_eq!(
                    theirs, missing,
                    "{method}: team b on team a's sandbox vs a sandbox that does not exist"
                );
                assert_eq!(theirs.0, tonic::Code::NotFound, "{method}: {theirs:?}");
            }
        }
    }
    still_intact(&teams).await;
    teams.fleet.stop().await;
}
