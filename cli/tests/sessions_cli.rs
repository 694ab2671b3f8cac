//! `berth sandbox shell`, `attach`, `sessions` and `exec -i` as a person runs them:
//! the built binary in a real terminal (tmux, driven with `send-keys` and read with
//! `capture-pane`) against a docker sandbox, and with piped stdin against a mock one.
//!
//! The terminal tests need tmux and docker; they skip visibly without them, unless
//! `BERTH_REQUIRE_DOCKER=1` (CI sets it and installs tmux).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::docker::docker_or_skip;
use berth_testkit::tmux::{Tmux, status_of};
use berth_testkit::{TestFleet, id_of};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn berth(fleet: &TestFleet, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .current_dir(dir)
        .env("BERTH_API_URL", fleet.cp.api_url())
        .env("BERTH_API_KEY", &fleet.api.key)
        .env("BERTH_CLIENT_CONFIG", dir.join("client.yaml"))
        .env("NO_COLOR", "1")
        .env_remove("BERTH_CONTEXT")
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn exec_i_sends_local_stdin_and_ends_with_the_remote_status() {
    let fleet = TestFleet::start().await;
    let dir = tempfile::tempdir().unwrap();
    let id = id_of(&fleet.api.create_sandbox(json!({"provider": "mock"})).await);
    let mut command = berth(&fleet, dir.path());
    command
        .args(["sandbox", "exec", "-i", &id, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let payload: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&sent).await.unwrap();
        // dropping stdin is end-of-file: the remote cat's stdin closes
    });
    let out = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == payload,
        "cat gave back {} of {} bytes",
        out.stdout.len(),
        payload.len()
    );

    let mut command = berth(&fleet, dir.path());
    command
        .args([
            "sandbox",
            "exec",
            "-i",
            &id,
            "--",
            "read line; echo got $line; exit 5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\n")
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");

    let mut command = berth(&fleet, dir.path());
    command
        .args(["sandbox", "sessions", &id])
        .stdout(Stdio::piped());
    let out = command.output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    fleet.stop().await;
}

/// The command line that runs `berth ARGS` against the fleet inside tmux.
fn berth_line(fleet: &TestFleet, dir: &Path, args: &str) -> String {
    format!(
        "cd {} && BERTH_API_URL={} BERTH_API_KEY={} BERTH_CLIENT_CONFIG={} {} {args}",
        dir.display(),
        fleet.cp.api_url(),
        fleet.api.key,
        dir.join("client.yaml").display(),
        env!("CARGO_BIN_EXE_berth"),
    )
}

#[tokio::test]
async fn sandbox_shell_is_a_real_terminal_in_a_docker_sandbox() {
    const TEST: &str = "sandbox_shell_is_a_real_terminal_in_a_docker_sandbox";
    let Some(docker) = docker_or_skip(TEST).await else {
        return;
    };
    let Some(tmux) = Tmux::start() else {
        return;
    };
    let fleet = TestFleet::builder().docker(docker).start().await;
    let dir = tempfile::tempdir().unwrap();
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);

    // the size set at start, then the size after a resize
    let status = dir.path().join("shell.status");
    let shell = berth_line(&fleet, dir.path(), &format!("sandbox shell {id}"));
    tmux.open("shell", 100, 30, &shell, &status);
    tmux.keys("shell", &["stty size", "Enter"]);
    tmux.wait_for("shell", "30 100").await;
    tmux.run(&["resize-window", "-t", "shell", "-x", "120", "-y", "40"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux.keys("shell", &["clear; stty size", "Enter"]);
    tmux.wait_for("shell", "40 120").await;

    // Ctrl-C interrupts the foreground command and the shell prompts again
    tmux.keys("shell", &["clear; sleep 100", "Enter"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tmux.keys("shell", &["C-c"]);
    tmux.keys("shell", &["echo back at the prompt $?", "Enter"]);
    tmux.wait_for("shell", "back at the prompt 130").await;

    // exit 7 ends the CLI with 7
    tmux.keys("shell", &["exit 7", "Enter"]);
    assert_eq!(status_of(&tmux, "shell", &status).await, 7);

    // ~. detaches; the session runs on, is listed, and attach goes back in
    let status = dir.path().join("detach.status");
    let shell = berth_line(&fleet, dir.path(), &format!("sandbox shell {id}"));
    tmux.open("detach", 100, 30, &shell, &status);
    tmux.keys("detach", &["export MARK=still-here", "Enter"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux.keys("detach", &["Enter", "~."]);
    assert_eq!(status_of(&tmux, "detach", &status).await, 0);
    let screen = tmux.wait_for("detach", "back in with").await;
    let session = screen
        .split_whitespace()
        .find(|word| word.starts_with("ses-"))
        .expect("the detach message names the session")
        .to_owned();
    let mut list = berth(&fleet, dir.path());
    list.args(["sandbox", "sessions", &id])
        .stdout(Stdio::piped());
    let listed = String::from_utf8(list.output().await.unwrap().stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&session) && line.contains("running")),
        "{listed}"
    );
    let status = dir.path().join("attach.status");
    let attach = berth_line(
        &fleet,
        dir.path(),
        &format!("sandbox attach {id} {session}"),
    );
    tmux.open("attach", 100, 30, &attach, &status);
    tmux.keys("attach", &["echo mark=$MARK", "Enter"]);
    tmux.wait_for("attach", "mark=still-here").await;
    tmux.keys("attach", &["exit 9", "Enter"]);
    assert_eq!(status_of(&tmux, "attach", &status).await, 9);

    fleet.api.delete(&format!("/sandboxes/{id}")).await;
    fleet.stop().await;
}
