//! The SSH gateway with the real OpenSSH client, on mock sandboxes: one-time tokens
//! (`ssh TOKEN@host`: output and exit status come back, the token opens one login
//! only), registered keys (`ssh SANDBOX_ID@host`, only to the owner's sandboxes,
//! refused once removed), `env`, an interactive `ssh -t` in tmux that follows a
//! resize, `sftp` and `scp` both ways keeping the bytes, `ssh -L` to a server in the
//! sandbox, refusals with their reasons for a destroyed sandbox, and the audit
//! records of it all. Each case runs against a listening worker and one that dials
//! out. (The docker sandboxes' run is `docker_ssh.rs`.)

use std::path::Path;
use std::time::Duration;

use berth_testkit::ssh::{OpenSsh, free_port};
use berth_testkit::tmux::Tmux;
use berth_testkit::{TestFleet, id_of};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A mock fleet (one worker, listening or dialing out), a sandbox, and the client.
async fn fleet(test: &str, dial_out: bool) -> Option<(TestFleet, String, OpenSsh)> {
    let fleet = TestFleet::builder()
        .workers(1)
        .worker(move |config| {
            if dial_out {
                config.listen = None;
            }
        })
        .start()
        .await;
    let ssh = OpenSsh::for_gateway(test, fleet.cp.ssh_addr())?;
    let sandbox = fleet.api.create_sandbox(json!({"ttl": "10m"})).await;
    Some((fleet, id_of(&sandbox), ssh))
}

async fn token(fleet: &TestFleet, id: &str) -> String {
    let (status, body) = fleet
        .api
        .post(&format!("/sandboxes/{id}/ssh-token"), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["ssh_command"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ssh -p {} ", fleet.cp.ssh_addr().port())),
        "{body}"
    );
    body["token"].as_str().unwrap().to_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

async fn audit_operations(fleet: &TestFleet) -> Vec<(String, String, String)> {
    let (status, body) = fleet.api.get("/audit?limit=2000").await;
    assert_eq!(status, 200, "{body}");
    body["records"]
        .as_array()
        .or(body.as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r: &Value| {
            (
                r["operation"].as_str().unwrap_or_default().to_owned(),
                r["detail"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn a_token_runs_one_command_once(dial_out: bool) {
    let Some((fleet, id, ssh)) = fleet("a_token_runs_one_command_once", dial_out).await else {
        return;
    };
    let token = token(&fleet, &id).await;
    let out = ssh.ssh(&token, None, &[], "echo hi; exit 3").await;
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // the same token again: refused, and told why
    let again = ssh.ssh(&token, None, &[], "echo hi").await;
    assert_eq!(again.status.code(), Some(255));
    assert!(text(&again.stdout).is_empty());
    assert!(
        text(&again.stderr).contains("used already"),
        "{}",
        text(&again.stderr)
    );

    // a made-up token and a user that is neither a token nor a key's login
    let made_up = ssh.ssh("bst-0000", None, &[], "true").await;
    assert_eq!(made_up.status.code(), Some(255));
    assert!(
        text(&made_up.stderr).contains("not valid"),
        "{}",
        text(&made_up.stderr)
    );
    let nobody = ssh.ssh(&id, None, &[], "true").await;
    assert_eq!(nobody.status.code(), Some(255));
    assert!(
        text(&nobody.stderr).contains("Permission denied"),
        "{}",
        text(&nobody.stderr)
    );

    // env requests reach the command; stdin too
    let token = self::token(&fleet, &id).await;
    let out = ssh
        .ssh(
            &token,
            None,
            &["-o", "SetEnv=GREETING=hello-env"],
            "echo $GREETING",
        )
        .await;
    assert_eq!(text(&out.stdout), "hello-env\n", "{}", text(&out.stderr));

    // a token waits for its login only so long
    let (status, short) = fleet
        .api
        .post(&format!("/sandboxes/{id}/ssh-token"), json!({"ttl": "1s"}))
        .await;
    assert_eq!(status, 201, "{short}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let out = ssh
        .ssh(short["token"].as_str().unwrap(), None, &[], "true")
        .await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("expired"),
        "{}",
        text(&out.stderr)
    );

    // a token outlives nothing: issued, then the sandbox is destroyed
    let late = self::token(&fleet, &id).await;
    let (status, _) = fleet.api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(status, 200);
    let out = ssh.ssh(&late, None, &[], "true").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("destroyed"),
        "{}",
        text(&out.stderr)
    );
    let (status, body) = fleet
        .api
        .post(&format!("/sandboxes/{id}/ssh-token"), json!({}))
        .await;
    assert_eq!(status, 404, "{body}");

    let records = audit_operations(&fleet).await;
    let logins: Vec<_> = records.iter().filter(|r| r.0 == "ssh login").collect();
    assert!(
        logins.iter().any(|r| r.2 == "ok") && logins.iter().any(|r| r.2 == "refused"),
        "{logins:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.0 == "session start" && r.1.contains("echo hi; exit 3")),
        "{records:?}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_token_runs_one_command_once_listening() {
    a_token_runs_one_command_once(false).await;
}

#[tokio::test]
async fn a_token_runs_one_command_once_dialing_out() {
    a_token_runs_one_command_once(true).await;
}

async fn register(fleet: &TestFleet, key: &str, public_key_file: &Path) -> (u16, Value) {
    let public_key = std::fs::read_to_string(public_key_file).unwrap();
    fleet
        .api
        .with_key(key)
        .post("/ssh-keys", json!({"public_key": public_key}))
        .await
}

#[tokio::test]
async fn a_registered_key_logs_in_to_its_owners_sandboxes_only() {
    const TEST: &str = "a_registered_key_logs_in_to_its_owners_sandboxes_only";
    let Some((fleet, _, ssh)) = fleet(TEST, false).await else {
        return;
    };
    fleet.api.create_team("red", json!({})).await;
    fleet.api.create_team("blue", json!({})).await;
    let red = fleet.api.team_key("red", &["read", "write", "exec"]).await;
    let blue = fleet.api.team_key("blue", &["read", "write", "exec"]).await;
    let red_box = id_of(&fleet.api.with_key(&red).create_sandbox(json!({})).await);
    let blue_box = id_of(&fleet.api.with_key(&blue).create_sandbox(json!({})).await);

    let key = ssh.keygen("red_key");
    let (status, added) = register(&fleet, &red, &key.with_extension("pub")).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["team_id"], "red");
    // one key, one owner
    let (status, again) = register(&fleet, &blue, &key.with_extension("pub")).await;
    assert_eq!(status, 409, "{again}");

    let out = ssh.ssh(&red_box, Some(&key), &[], "echo in red").await;
    assert_eq!(text(&out.stdout), "in red\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    // another team's sandbox is not there for this key
    let out = ssh.ssh(&blue_box, Some(&key), &[], "echo in blue").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stdout).is_empty());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    // a key nobody registered
    let stranger = ssh.keygen("stranger");
    let out = ssh.ssh(&red_box, Some(&stranger), &[], "true").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );

    // blue cannot see or remove red's key; red lists and removes it
    let (_, listed) = fleet.api.with_key(&blue).get("/ssh-keys").await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 0, "{listed}");
    let key_id = added["id"].as_str().unwrap();
    let (status, _) = fleet
        .api
        .with_key(&blue)
        .delete(&format!("/ssh-keys/{key_id}"))
        .await;
    assert_eq!(status, 404);
    let (status, removed) = fleet
        .api
        .with_key(&red)
        .delete(&format!("/ssh-keys/{key_id}"))
        .await;
    assert_eq!(status, 200, "{removed}");
    assert!(removed["removed_at"].is_string(), "{removed}");
    let out = ssh.ssh(&red_box, Some(&key), &[], "true").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("was removed"),
        "{}",
        text(&out.stderr)
    );

    // a token is as good as the key that issued it: revoking the key refuses it
    let (status, minted) = fleet
        .api
        .post(
            "/keys",
            json!({"name": "short-lived", "team": "red", "scopes": ["exec", "read"]}),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let (status, issued) = fleet
        .api
        .with_key(minted["key"].as_str().unwrap())
        .post(&format!("/sandboxes/{red_box}/ssh-token"), json!({}))
        .await;
    assert_eq!(status, 201, "{issued}");
    let (status, _) = fleet
        .api
        .delete(&format!("/keys/{}", minted["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    let out = ssh
        .ssh(issued["token"].as_str().unwrap(), None, &[], "true")
        .await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("revoked"),
        "{}",
        text(&out.stderr)
    );

    // an RSA key is refused at registration, with what to use instead
    let (status, body) = fleet
        .api
        .with_key(&red)
        .post(
            "/ssh-keys",
            json!({"public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDOx0nFbQn1rP5M6bRkWxqUOr1nF7mQyS6x3hJ4Xg0n6f9vJcAq6s7V5uQnV0m4bTtU3yQe7o6y7Zb8HnZtP5o1gB2Qv3Qm9K8s3i1k7N0u5z0dJr8mQW1b7r2hJ9bK5xv7d6w0k3Q8p1b8yKx9nJ7T4m2j1r0A5u9Ew== a@b"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    fleet.stop().await;
}

async fn files_go_both_ways_with_sftp_and_scp(dial_out: bool) {
    let Some((fleet, id, ssh)) = fleet("files_go_both_ways_with_sftp_and_scp", dial_out).await
    else {
        return;
    };
    let data: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let local = ssh.dir().join("up.bin");
    std::fs::write(&local, &data).unwrap();

    let token = token(&fleet, &id).await;
    let batch = format!(
        "mkdir sub\nput {} sub/up.bin\nls -l sub\nget sub/up.bin {}\nrename sub/up.bin sub/moved.bin\nls sub\n",
        local.display(),
        ssh.dir().join("down.bin").display()
    );
    let out = ssh.sftp(&token, None, &batch).await;
    assert!(
        out.status.success(),
        "sftp: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let listing = text(&out.stdout);
    assert!(listing.contains("moved.bin"), "{listing}");
    let down = std::fs::read(ssh.dir().join("down.bin")).unwrap();
    assert_eq!(sha256(&down), sha256(&data));
    // the sandbox has the same bytes (read back through the API)
    let (status, body) = fleet
        .api
        .exec(&id, json!({"command": "ls -l /workspace/sub"}))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["stdout"].as_str().unwrap().contains("6000000"),
        "{body}"
    );

    // scp (over SFTP, as OpenSSH 9 does) both ways
    let token = self::token(&fleet, &id).await;
    let out = ssh
        .scp(
            &token,
            None,
            &local.display().to_string(),
            "REMOTE:/workspace/scp.bin",
        )
        .await;
    assert!(out.status.success(), "scp up: {}", text(&out.stderr));
    let back = ssh.dir().join("scp-back.bin");
    let token = self::token(&fleet, &id).await;
    let out = ssh
        .scp(
            &token,
            None,
            "REMOTE:/workspace/scp.bin",
            &back.display().to_string(),
        )
        .await;
    assert!(out.status.success(), "scp down: {}", text(&out.stderr));
    assert_eq!(sha256(&std::fs::read(&back).unwrap()), sha256(&data));

    // a file that is not there is the client's usual error, not a hang
    let token = self::token(&fleet, &id).await;
    let out = ssh
        .sftp(
            &token,
            None,
            &format!("get /workspace/nope {}\n", back.display()),
        )
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let records = audit_operations(&fleet).await;
    assert!(
        records
            .iter()
            .any(|r| r.0 == "ssh sftp" && r.1.contains("wrote /workspace/sub/up.bin")),
        "{records:?}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn files_go_both_ways_with_sftp_and_scp_listening() {
    files_go_both_ways_with_sftp_and_scp(false).await;
}

#[tokio::test]
async fn files_go_both_ways_with_sftp_and_scp_dialing_out() {
    files_go_both_ways_with_sftp_and_scp(true).await;
}

async fn a_local_forward_reaches_a_server_in_the_sandbox(dial_out: bool) {
    let Some((fleet, id, ssh)) =
        fleet("a_local_forward_reaches_a_server_in_the_sandbox", dial_out).await
    else {
        return;
    };
    let (status, out) = fleet
        .api
        .exec(&id, json!({"command": "serve --port 8000"}))
        .await;
    assert_eq!((status, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let key = ssh.keygen("forwarder");
    let (status, added) = register(&fleet, &fleet.api.key, &key.with_extension("pub")).await;
    assert_eq!(status, 201, "{added}");
    let local = free_port();
    let _forward = ssh.forward(&id, Some(&key), local, 8000).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for i in 0..5 {
        let body = client
            .get(format!("http://127.0.0.1:{local}/through-ssh-{i}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains(&format!("GET /through-ssh-{i}")), "{body}");
    }
    // a port nothing listens on: the forward is refused, the client says so
    let dead = free_port();
    let _refused = ssh.forward(&id, Some(&key), dead, 8999).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", dead))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("a refused forward closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let records = audit_operations(&fleet).await;
    assert!(
        records
            .iter()
            .any(|r| r.0 == "ssh forward" && r.1.contains("localhost:8000") && r.2 == "ok"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.0 == "ssh forward" && r.1.contains("8999") && r.2 == "refused"),
        "{records:?}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_local_forward_reaches_a_server_in_the_sandbox_listening() {
    a_local_forward_reaches_a_server_in_the_sandbox(false).await;
}

#[tokio::test]
async fn a_local_forward_reaches_a_server_in_the_sandbox_dialing_out() {
    a_local_forward_reaches_a_server_in_the_sandbox(true).await;
}

#[tokio::test]
async fn an_interactive_shell_has_the_terminal_size_and_follows_a_resize() {
    const TEST: &str = "an_interactive_shell_has_the_terminal_size_and_follows_a_resize";
    let Some((fleet, id, ssh)) = fleet(TEST, true).await else {
        return;
    };
    let Some(tmux) = Tmux::start() else {
        return;
    };
    let token = token(&fleet, &id).await;
    let status = ssh.dir().join("status");
    tmux.open("ssh", 100, 30, &ssh.ssh_line(&token, None, "-t"), &status);
    tmux.keys("ssh", &["stty size", "Enter"]);
    tmux.wait_for("ssh", "30 100").await;
    tmux.run(&["resize-window", "-t", "ssh", "-x", "120", "-y", "40"]);
    tmux.keys("ssh", &["stty size", "Enter"]);
    tmux.wait_for("ssh", "40 120").await;
    tmux.keys("ssh", &["exit 4", "Enter"]);
    assert_eq!(
        berth_testkit::tmux::status_of(&tmux, "ssh", &status).await,
        4
    );
    fleet.stop().await;
}

#[tokio::test]
async fn the_gateway_shows_in_status_with_its_host_key() {
    let fleet = TestFleet::builder().workers(1).start().await;
    let (status, body) = fleet.api.get("/status").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["ssh"]["address"],
        fleet.cp.ssh_addr().to_string(),
        "{body}"
    );
    let fingerprint = body["ssh"]["host_key_fingerprint"].as_str().unwrap();
    assert!(fingerprint.starts_with("SHA256:"), "{body}");
    // what a client sees is that key (ssh-keyscan asks the gateway)
    let scan = std::process::Command::new("ssh-keyscan")
        .args(["-T", "20", "-t", "ed25519", "-p"])
        .arg(fleet.cp.ssh_addr().port().to_string())
        .arg("127.0.0.1")
        .output();
    if let Ok(scan) = scan
        && scan.status.success()
    {
        let line = text(&scan.stdout);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), line).unwrap();
        let shown = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            text(&shown.stdout).contains(fingerprint),
            "{} vs {fingerprint}",
            text(&shown.stdout)
        );
    }
    fleet.stop().await;
}

#[tokio::test]
async fn logins_racing_with_one_token_let_exactly_one_in() {
    const TEST: &str = "logins_racing_with_one_token_let_exactly_one_in";
    let Some((fleet, id, ssh)) = fleet(TEST, false).await else {
        return;
    };
    let token = token(&fleet, &id).await;
    let logins = (0..6).map(|_| ssh.ssh(&token, None, &[], "echo in"));
    let outs = futures::future::join_all(logins).await;
    let codes: Vec<Option<i32>> = outs.iter().map(|out| out.status.code()).collect();
    assert_eq!(
        codes.iter().filter(|code| **code == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|code| **code == Some(255)).count(),
        5,
        "{codes:?}"
    );
    for out in outs.iter().filter(|out| out.status.code() == Some(255)) {
        assert!(
            text(&out.stderr).contains("used already"),
            "{}",
            text(&out.stderr)
        );
    }
    fleet.stop().await;
}
