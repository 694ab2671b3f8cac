//! The SSH gateway into docker sandboxes with the real OpenSSH client, as the issue's
//! must-shows have it: `ssh -p P TOKEN@127.0.0.1 'echo hi; exit 3'` prints `hi` and
//! exits 3, and the same token is refused the second time; an interactive `ssh -t`
//! driven through tmux shows the terminal size and follows a resize; `sftp` put and
//! get of a 50 MB file keeps its sha256; `scp` both ways; `ssh -L` to busybox `httpd`
//! inside the sandbox, then curl through it. Against a listening worker and one that
//! dials out.
//!
//! Skips visibly without docker, OpenSSH or tmux (fails instead with
//! `BERTH_REQUIRE_DOCKER=1` / `BERTH_REQUIRE_SSH=1`, as CI sets).

use std::time::Duration;

use berth_testkit::docker::{DockerCleanup, docker_or_skip, unique_worker_id};
use berth_testkit::ssh::{OpenSsh, free_port};
use berth_testkit::tmux::{Tmux, status_of};
use berth_testkit::{TestFleet, id_of};
use serde_json::json;
use sha2::{Digest, Sha256};

const SIZE: usize = 50 * 1024 * 1024;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256_of(path: &std::path::Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

async fn token(fleet: &TestFleet, id: &str) -> String {
    let (status, body) = fleet
        .api
        .post(&format!("/sandboxes/{id}/ssh-token"), json!({"ttl": "5m"}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn openssh_works_against_a_docker_sandbox(dial_out: bool) {
    let test = "openssh_works_against_a_docker_sandbox";
    let Some(docker) = docker_or_skip(test).await else {
        return;
    };
    let worker_id = unique_worker_id("ssh");
    let _cleanup = DockerCleanup::new(&docker, &[&worker_id]);
    let builder = TestFleet::builder()
        .docker(docker)
        .worker_ids(&[&worker_id]);
    let builder = if dial_out {
        builder.worker(|config| config.listen = None)
    } else {
        builder
    };
    let fleet = builder.start().await;
    let Some(ssh) = OpenSsh::for_gateway(test, fleet.cp.ssh_addr()) else {
        return fleet.stop().await;
    };
    let sandbox = fleet.api.create_sandbox(json!({"ttl": "15m"})).await;
    let id = id_of(&sandbox);

    // exec: output and exit status; the token opens one login only
    let once = token(&fleet, &id).await;
    let out = ssh.ssh(&once, None, &[], "echo hi; exit 3").await;
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let again = ssh.ssh(&once, None, &[], "echo hi; exit 3").await;
    assert_eq!(again.status.code(), Some(255));
    assert!(text(&again.stdout).is_empty(), "{}", text(&again.stdout));
    assert!(
        text(&again.stderr).contains("used already"),
        "{}",
        text(&again.stderr)
    );

    // an interactive shell in a real terminal: its size, then a resize
    if let Some(tmux) = Tmux::start() {
        let login = token(&fleet, &id).await;
        let status = ssh.dir().join("tty-status");
        tmux.open("tty", 100, 30, &ssh.ssh_line(&login, None, "-t"), &status);
        tmux.keys("tty", &["stty size", "Enter"]);
        tmux.wait_for("tty", "30 100").await;
        tmux.run(&["resize-window", "-t", "tty", "-x", "120", "-y", "40"]);
        tmux.keys("tty", &["clear; stty size", "Enter"]);
        tmux.wait_for("tty", "40 120").await;
        tmux.keys("tty", &["exit 5", "Enter"]);
        assert_eq!(status_of(&tmux, "tty", &status).await, 5);
    }

    // sftp: a 50 MB file up and down, the same bytes
    let local = ssh.dir().join("big.bin");
    let data: Vec<u8> = (0..SIZE as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    std::fs::write(&local, &data).unwrap();
    drop(data);
    let down = ssh.dir().join("big-back.bin");
    let login = token(&fleet, &id).await;
    let batch = format!(
        "put {} /tmp/big.bin\nget /tmp/big.bin {}\n",
        local.display(),
        down.display()
    );
    let out = ssh.sftp(&login, None, &batch).await;
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert_eq!(sha256_of(&down), sha256_of(&local));
    // the container has those bytes
    let login = token(&fleet, &id).await;
    let out = ssh.ssh(&login, None, &[], "sha256sum /tmp/big.bin").await;
    assert!(
        text(&out.stdout).starts_with(&sha256_of(&local)),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // scp both ways
    let small = ssh.dir().join("small.txt");
    std::fs::write(&small, "copied with scp\n").unwrap();
    let login = token(&fleet, &id).await;
    let out = ssh
        .scp(
            &login,
            None,
            &small.display().to_string(),
            "REMOTE:/tmp/small.txt",
        )
        .await;
    assert!(out.status.success(), "scp up: {}", text(&out.stderr));
    let back = ssh.dir().join("small-back.txt");
    let login = token(&fleet, &id).await;
    let out = ssh
        .scp(
            &login,
            None,
            "REMOTE:/tmp/small.txt",
            &back.display().to_string(),
        )
        .await;
    assert!(out.status.success(), "scp down: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied with scp\n");

    // ssh -L to busybox httpd inside the sandbox, then curl through it
    let script = "mkdir -p /tmp/site && echo 'served by httpd over ssh -L' > /tmp/site/index.html \
                  && httpd -p 8000 -h /tmp/site && echo up";
    let (status, out) = fleet.api.exec(&id, json!({"command": script})).await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("up\n")),
        "{out}"
    );
    let key = ssh.keygen("forward");
    let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (status, added) = fleet
        .api
        .post("/ssh-keys", json!({"public_key": public_key}))
        .await;
    assert_eq!(status, 201, "{added}");
    let local_port = free_port();
    let _forward = ssh.forward(&id, Some(&key), local_port, 8000).await;
    let curl = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("http://127.0.0.1:{local_port}/"))
        .output()
        .await
        .expect("curl");
    assert_eq!(
        text(&curl.stdout),
        "served by httpd over ssh -L\n",
        "{}",
        text(&curl.stderr)
    );

    fleet.api.delete(&format!("/sandboxes/{id}")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_works_against_a_docker_sandbox_on_a_listening_worker() {
    openssh_works_against_a_docker_sandbox(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_works_against_a_docker_sandbox_on_a_dial_out_worker() {
    openssh_works_against_a_docker_sandbox(true).await;
}
