//! The client side of the issue-19 wire contract, against a canned HTTP server: the
//! requests `workers rm` and `sandbox prune --state` send, the sandbox id a failed
//! create names, and worker tables from RFC 3339 times with `allocated`.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One canned answer: status and JSON body for a request line.
type Answer = fn(&str) -> (u16, String);

/// Serves `answer` on a loopback port; returns the URL and the request lines seen.
async fn fake_api(answer: Answer) -> (String, Arc<Mutex<Vec<String>>>) {
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
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).await.expect("header");
                        if header.trim().is_empty() {
                            break;
                        }
                        let lower = header.to_ascii_lowercase();
                        if let Some(value) = lower.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.expect("body");
                    let request_line = request_line.trim().to_owned();
                    let (status, body) = answer(&request_line);
                    log.lock().expect("log").push(request_line);
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
    let deletes: Vec<&String> = seen.iter().filter(|l| l.starts_with("DELETE")).collect();
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
