//! The client side of the issue-19 and issue-20 wire contracts, against a canned HTTP
//! server: the requests `workers rm` and `sandbox prune --state` send, the sandbox id a
//! failed create names, worker tables from RFC 3339 times with `allocated`; the
//! requests and tables of `teams`, `users`, `quota` and team-bound `keys`; and that
//! the routes the CLI calls are in the server's route table.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One canned answer: status and JSON body for a request line.
type Answer = fn(&str) -> (u16, String);

/// A request the fake API was sent.
#[derive(Debug, Clone)]
struct Seen {
    /// `METHOD /path?query HTTP/1.1`
    line: String,
    /// Header names lowercased, values trimmed.
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("{}: {}", self.line, self.body))
    }
}

/// Serves `answer` on a loopback port; returns the URL and the requests seen.
async fn fake_api(answer: Answer) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    let mut headers = Vec::new();
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).await.expect("header");
                        if header.trim().is_empty() {
                            break;
                        }
                        let Some((name, value)) = header.split_once(':') else {
                            continue;
                        };
                        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                        if name == "content-length" {
                            length = value.parse().unwrap_or(0);
                        }
                        headers.push((name, value.to_owned()));
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.expect("body");
                    let request_line = request_line.trim().to_owned();
                    let (status, answer_body) = answer(&request_line);
                    log.lock().expect("log").push(Seen {
                        line: request_line,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let body = answer_body;
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    reader
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .expect("answered");
                }
            });
        }
    });
    (url, seen)
}

async fn berth(url: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(dir.path())
        .env("BERTH_API_URL", url)
        .env("BERTH_API_KEY", "k")
        .env("BERTH_CLIENT_CONFIG", dir.path().join("none.yaml"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .args(args)
        .output()
        .await
        .expect("berth runs")
}

const WORKER: &str = r#"{"id": "w1", "status": "online", "cordoned": false,
    "providers": ["mock"], "capacity": {"max_sandboxes": 10, "memory_mb": 4096, "vcpus": 4},
    "allocated": {"sandboxes": 3, "memory_mb": 1024, "vcpus": 2},
    "advertise_addr": "127.0.0.1:1", "hostname": "h", "version": "0.1.0",
    "spiffe_id": "spiffe://berth.local/worker/w1",
    "last_heartbeat": "2000-01-01T00:00:00Z", "enrolled_at": "2000-01-01T00:00:00Z",
    "certificate": {"serial": "ab", "expires_at": "2000-01-02T00:00:00Z"},
    "drain": {"state": "none", "deadline": null, "remaining": 0}}"#;

fn fleet_answers(line: &str) -> (u16, String) {
    if line.starts_with("GET /api/v1/workers ") {
        return (200, format!("[{WORKER}]"));
    }
    if line.starts_with("GET /api/v1/workers/w1 ") {
        return (200, WORKER.into());
    }
    if line.starts_with("DELETE /api/v1/workers/w1?") {
        return (
            200,
            r#"{"removed": "w1", "lost_sandboxes": ["sbx-1", "sbx-2"]}"#.into(),
        );
    }
    if line.starts_with("DELETE /api/v1/sandboxes") {
        return (200, r#"{"pruned": 4}"#.into());
    }
    if line.starts_with("POST /api/v1/sandboxes ") {
        let body = r#"{"code": "UNAVAILABLE", "message": "spawn failed: no such image", "sandbox_id": "sbx-0123456789abcdef"}"#;
        return (503, body.into());
    }
    (
        404,
        r#"{"code": "NOT_FOUND", "message": "nothing here"}"#.into(),
    )
}

#[tokio::test]
async fn workers_rm_and_prune_send_the_contract_s_requests() {
    let (url, seen) = fake_api(fleet_answers).await;
    let out = berth(&url, &["workers", "rm", "w"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "removed w1: 2 sandboxes lost\n"
    );
    let out = berth(&url, &["workers", "rm", "w1", "--force", "--yes"]).await;
    assert_eq!(out.status.code(), Some(0));
    let out = berth(&url, &["sandbox", "prune", "--state", "lost,error", "-y"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pruned 4 sandboxes\n");
    let out = berth(&url, &["sandbox", "prune", "-y"]).await;
    assert_eq!(out.status.code(), Some(0));
    let out = berth(&url, &["sandbox", "prune", "--state", "running", "-y"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "only expired, lost and error prune"
    );

    let seen = seen.lock().expect("log").clone();
    let deletes: Vec<&str> = seen
        .iter()
        .map(|s| s.line.as_str())
        .filter(|l| l.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deletes,
        [
            "DELETE /api/v1/workers/w1?force=false HTTP/1.1",
            "DELETE /api/v1/workers/w1?force=true HTTP/1.1",
            "DELETE /api/v1/sandboxes?state=lost%2Cerror HTTP/1.1",
            "DELETE /api/v1/sandboxes HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn a_failed_create_names_its_sandbox() {
    let (url, _) = fake_api(fleet_answers).await;
    let out = berth(&url, &["sandbox", "create", "--provider", "mock"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sandbox sbx-0123456789abcdef failed: spawn failed: no such image"),
        "{stderr}"
    );
}

#[tokio::test]
async fn worker_tables_read_rfc3339_times_and_allocations() {
    let (url, _) = fake_api(fleet_answers).await;
    let out = berth(&url, &["workers", "list", "-o", "wide", "--no-headers"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    let cells: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(&cells[..4], ["w1", "online", "mock", "3/10"], "{table}");
    assert!(
        table.contains("d ago") && table.contains("1024/4096Mi"),
        "{table}"
    );
    assert!(
        table.contains("2/4") && table.contains("spiffe://berth.local/worker/w1"),
        "{table}"
    );
    let out = berth(&url, &["workers", "get", "w1"]).await;
    let details = String::from_utf8_lossy(&out.stdout);
    assert!(
        details.contains("(expires ") && details.contains("d ago)"),
        "{details}"
    );
}

const TEAM: &str = r#"{"name": "a", "created_at": "2000-01-01T00:00:00Z",
    "quota": {"max_sandboxes": 10, "max_vcpus": null, "max_memory_mb": 4096, "max_ttl": "2h"},
    "pools": ["eu"], "usage": {"sandboxes": 3, "vcpus": 3, "memory_mb": 1536}, "users": 2}"#;

const USER: &str = r#"{"name": "alice", "team": "a", "created_at": "2000-01-01T00:00:00Z"}"#;

const KEY: &str = r#"{"id": "key-1", "name": "ci", "scopes": ["read"], "team": "a",
    "user": "alice", "role": "member", "created_at": "2000-01-01T00:00:00Z",
    "expires_at": null, "last_used_at": null, "revoked_at": null}"#;

const CLUSTER_KEY: &str = r#"{"id": "key-0", "name": "admin", "scopes": ["admin"],
    "team": null, "user": null, "role": "cluster-admin",
    "created_at": "2000-01-01T00:00:00Z", "expires_at": null, "last_used_at": null,
    "revoked_at": null}"#;

const POOL_STATUS: &str = r#"{"team": "a", "pools": [{"name": "eu", "workers": 2,
    "online": 2, "capacity": {"sandboxes": 8}, "used": {"sandboxes": 3},
    "available": {"sandboxes": 5}}],
    "quota": {"max_sandboxes": 10, "max_vcpus": null, "max_memory_mb": null, "max_ttl": "2h"},
    "usage": {"sandboxes": 3, "vcpus": 3, "memory_mb": 1536}}"#;

/// The issue-20 contract's answers.
fn team_answers(line: &str) -> (u16, String) {
    let (method, rest) = line.split_once(' ').unwrap_or_default();
    let path = rest.split(' ').next().unwrap_or_default();
    let path_only = path.split('?').next().unwrap_or_default();
    match (method, path_only) {
        ("POST", "/api/v1/teams") => (201, TEAM.into()),
        ("GET", "/api/v1/teams") => (200, format!("[{TEAM}]")),
        ("GET" | "PATCH", "/api/v1/teams/a") => (200, TEAM.into()),
        ("DELETE", "/api/v1/teams/a") if path.ends_with("?force=true") => {
            (200, r#"{"status": "deleted", "destroyed": 2}"#.into())
        }
        ("DELETE", "/api/v1/teams/a") => (200, r#"{"status": "deleted", "destroyed": 0}"#.into()),
        ("POST", "/api/v1/teams/a/users") => (201, USER.into()),
        ("GET", "/api/v1/teams/a/users") => (200, format!("[{USER}]")),
        ("DELETE", "/api/v1/teams/a/users/alice") => (200, r#"{"status": "removed"}"#.into()),
        ("POST", "/api/v1/keys") => {
            let created = r#"{"id": "key-1", "name": "key-1", "key": "berth_secret",
                "scopes": ["read"], "team": "a", "user": "alice", "role": "member",
                "created_at": "2000-01-01T00:00:00Z", "expires_at": null}"#;
            (201, created.into())
        }
        ("GET", "/api/v1/keys") => (200, format!("[{CLUSTER_KEY}, {KEY}]")),
        ("GET", "/api/v1/pool/status") => (200, POOL_STATUS.into()),
        _ => (
            404,
            r#"{"code": "NOT_FOUND", "message": "nothing here"}"#.into(),
        ),
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs berth and asserts it succeeded.
async fn berth_ok(url: &str, args: &[&str]) -> String {
    let out = berth(url, args).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The requests seen whose line starts with `prefix`.
fn requests(seen: &Arc<Mutex<Vec<Seen>>>, prefix: &str) -> Vec<Seen> {
    seen.lock()
        .expect("log")
        .iter()
        .filter(|s| s.line.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test]
async fn teams_send_the_contract_s_bodies_and_paths() {
    let (url, seen) = fake_api(team_answers).await;
    let created = berth_ok(
        &url,
        &[
            "teams",
            "create",
            "a",
            "--max-sandboxes",
            "10",
            "--max-memory",
            "4096",
            "--max-ttl",
            "2h",
            "--pool",
            "eu",
        ],
    )
    .await;
    assert!(created.contains("3/10"), "{created}");
    let posts = requests(&seen, "POST /api/v1/teams ");
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].json(),
        json!({"name": "a", "max_sandboxes": 10, "max_memory_mb": 4096, "max_ttl": "2h",
            "pools": ["eu"]})
    );
    assert_eq!(posts[0].header("x-api-key"), Some("k"));

    berth_ok(&url, &["teams", "create", "bare"]).await;
    let posts = requests(&seen, "POST /api/v1/teams ");
    assert_eq!(
        posts[1].json(),
        json!({"name": "bare"}),
        "absent = no limit"
    );

    berth_ok(
        &url,
        &["teams", "set", "a", "--max-vcpus", "8", "--max-ttl", "0"],
    )
    .await;
    berth_ok(&url, &["teams", "set", "a", "--any-pool"]).await;
    let patches = requests(&seen, "PATCH /api/v1/teams/a ");
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].json(), json!({"max_vcpus": 8, "max_ttl": "0s"}));
    assert_eq!(patches[1].json(), json!({"pools": []}));
    let nothing = berth(&url, &["teams", "set", "a"]).await;
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        stderr(&nothing).contains("nothing to change"),
        "{}",
        stderr(&nothing)
    );
    assert_eq!(requests(&seen, "PATCH").len(), 2, "nothing was sent");

    let got = berth_ok(&url, &["teams", "get", "a", "-o", "json"]).await;
    let got: Value = serde_json::from_str(&got).expect("json");
    assert_eq!(got["quota"]["max_ttl"], "2h");
}

#[tokio::test]
async fn teams_delete_asks_first_and_force_is_a_query() {
    let (url, seen) = fake_api(team_answers).await;
    // stdin is not a terminal: without --yes nothing is deleted
    let refused = berth(&url, &["teams", "delete", "a"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    let refused = berth(&url, &["teams", "delete", "a", "--force"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(requests(&seen, "DELETE").is_empty());

    let out = berth_ok(&url, &["teams", "delete", "a", "--yes"]).await;
    assert_eq!(out, "deleted team a: 0 sandboxes destroyed\n");
    let out = berth_ok(&url, &["teams", "delete", "a", "--force", "-y"]).await;
    assert_eq!(out, "deleted team a: 2 sandboxes destroyed\n");
    let lines: Vec<String> = requests(&seen, "DELETE")
        .into_iter()
        .map(|s| s.line)
        .collect();
    assert_eq!(
        lines,
        [
            "DELETE /api/v1/teams/a HTTP/1.1",
            "DELETE /api/v1/teams/a?force=true HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn teams_list_shows_usage_against_quota() {
    let (url, _) = fake_api(team_answers).await;
    let table = berth_ok(&url, &["teams", "list"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SANDBOXES",
            "VCPUS",
            "MEMORY",
            "MAX",
            "TTL",
            "POOLS",
            "USERS",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["a", "3/10", "3/-", "1536Mi/4096Mi", "2h", "eu", "2"],
        "{table}"
    );
    assert_eq!(berth_ok(&url, &["teams", "list", "-q"]).await, "a\n");
    let bare = berth_ok(&url, &["teams", "list", "--no-headers"]).await;
    assert!(bare.starts_with("a "), "{bare}");
}

#[tokio::test]
async fn users_are_added_listed_and_removed_under_their_team() {
    let (url, seen) = fake_api(team_answers).await;
    let out = berth_ok(&url, &["users", "add", "--team", "a", "alice"]).await;
    assert_eq!(out, "added user alice to team a\n");
    let posts = requests(&seen, "POST /api/v1/teams/a/users ");
    assert_eq!(posts[0].json(), json!({"name": "alice"}));

    let table = berth_ok(&url, &["users", "list", "--team", "a"]).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "TEAM", "AGE"], "{table}");
    assert_eq!(&rows[1][..2], ["alice", "a"], "{table}");
    let missing = berth(&url, &["users", "list"]).await;
    assert_eq!(missing.status.code(), Some(2), "--team is required");

    let refused = berth(&url, &["users", "remove", "--team", "a", "alice"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert!(requests(&seen, "DELETE").is_empty());
    let out = berth_ok(&url, &["users", "remove", "--team", "a", "alice", "--yes"]).await;
    assert_eq!(out, "removed user alice from team a\n");
    berth_ok(
        &url,
        &[
            "users", "remove", "--team", "a", "alice", "--force", "--yes",
        ],
    )
    .await;
    let lines: Vec<String> = requests(&seen, "DELETE")
        .into_iter()
        .map(|s| s.line)
        .collect();
    assert_eq!(
        lines,
        [
            "DELETE /api/v1/teams/a/users/alice HTTP/1.1",
            "DELETE /api/v1/teams/a/users/alice?force=true HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn keys_are_created_for_a_team_and_user_and_listed_with_them() {
    let (url, seen) = fake_api(team_answers).await;
    let out = berth(
        &url,
        &[
            "keys", "create", "--team", "a", "--user", "alice", "--scopes", "read",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "berth_secret\n", "the key alone on stdout");
    assert!(
        stderr(&out).contains("team a · user alice · role member"),
        "{}",
        stderr(&out)
    );
    berth_ok(&url, &["keys", "create", "--scopes", "read,exec"]).await;
    let posts = requests(&seen, "POST /api/v1/keys ");
    assert_eq!(
        posts[0].json(),
        json!({"name": null, "scopes": ["read"], "expires": null, "team": "a",
            "user": "alice"})
    );
    assert_eq!(
        posts[1].json(),
        json!({"name": null, "scopes": ["read", "exec"], "expires": null}),
        "no team: the fields are left out, as a control plane without teams expects"
    );
    let lonely = berth(
        &url,
        &["keys", "create", "--user", "alice", "--scopes", "read"],
    )
    .await;
    assert_eq!(lonely.status.code(), Some(2), "--user needs --team");

    let table = berth_ok(&url, &["keys", "list"]).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        &rows[0][..6],
        ["ID", "NAME", "TEAM", "USER", "ROLE", "SCOPES"],
        "{table}"
    );
    assert_eq!(
        &rows[1][..6],
        ["key-0", "admin", "-", "-", "cluster-admin", "admin"]
    );
    assert_eq!(
        &rows[2][..6],
        ["key-1", "ci", "a", "alice", "member", "read"]
    );
}

#[tokio::test]
async fn quota_acts_for_the_team_it_names() {
    let (url, seen) = fake_api(team_answers).await;
    let table = berth_ok(&url, &["quota", "--team", "a"]).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[1], ["a", "3/10", "3/-", "1536Mi/-", "2h"], "{table}");
    assert_eq!(rows[3][0], "POOL", "{table}");
    assert_eq!(rows[4], ["eu", "2/2", "8", "3", "5"], "{table}");
    berth_ok(&url, &["quota"]).await;
    let gets = requests(&seen, "GET /api/v1/pool/status ");
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[0].header("x-tenant-id"), Some("a"));
    assert_eq!(gets[1].header("x-tenant-id"), None, "the key's own team");
    let json = berth_ok(&url, &["quota", "-o", "json"]).await;
    let json: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["pools"][0]["available"]["sandboxes"], 5);
}

/// Routes the client commands call that the server serves today.
const SERVED: &[(&str, &str)] = &[
    ("POST", "/api/v1/keys"),
    ("GET", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/{}"),
    ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/workers"),
    ("GET", "/api/v1/workers/{}"),
    ("DELETE", "/api/v1/workers/{}"),
    ("POST", "/api/v1/workers/{}/drain"),
    ("POST", "/api/v1/workers/{}/undrain"),
    ("POST", "/api/v1/workers/{}/cordon"),
    ("POST", "/api/v1/workers/{}/uncordon"),
    ("POST", "/api/v1/workers/{}/revoke"),
    ("GET", "/api/v1/status"),
    ("POST", "/api/v1/sandboxes"),
    ("GET", "/api/v1/sandboxes"),
    ("DELETE", "/api/v1/sandboxes"),
    ("GET", "/api/v1/sandboxes/{}"),
    ("DELETE", "/api/v1/sandboxes/{}"),
    ("POST", "/api/v1/teams"),
    ("GET", "/api/v1/teams"),
    ("GET", "/api/v1/teams/{}"),
    ("PATCH", "/api/v1/teams/{}"),
    ("DELETE", "/api/v1/teams/{}"),
    ("POST", "/api/v1/teams/{}/users"),
    ("GET", "/api/v1/teams/{}/users"),
    ("DELETE", "/api/v1/teams/{}/users/{}"),
    ("GET", "/api/v1/pool/status"),
];

/// `/api/v1/teams/{name}/users` → `/api/v1/teams/{}/users`: parameter names differ.
fn shape(path: &str) -> String {
    let mut shaped = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                shaped.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => shaped.push(c),
            _ => {}
        }
    }
    shaped
}

#[test]
fn the_routes_the_cli_calls_are_in_the_server_s_route_table() {
    let served: Vec<(String, String)> = berth_controlplane::api::route_list()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), shape(path)))
        .collect();
    let is_served = |(method, path): &(&str, &str)| {
        served.iter().any(|(m, p)| m == method && p == &shape(path))
    };
    let missing: Vec<_> = SERVED.iter().filter(|r| !is_served(r)).collect();
    assert!(
        missing.is_empty(),
        "the CLI calls routes not served: {missing:?}"
    );
}
