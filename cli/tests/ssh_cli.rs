//! `berth ssh-keys add|list|remove`, `berth sandbox ssh-token` and the gateway line of
//! `berth status`, as a user runs them: the built binary against a mock fleet, with
//! OpenSSH logging in with what they hand out. Skips visibly without OpenSSH (fails
//! with `BERTH_REQUIRE_SSH=1`, as CI sets).

use std::path::Path;

use berth_testkit::ssh::OpenSsh;
use berth_testkit::{TestFleet, id_of};
use serde_json::json;
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

async fn run(fleet: &TestFleet, dir: &Path, args: &[&str]) -> (String, String, i32) {
    let out = berth(fleet, dir).args(args).output().await.unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[tokio::test]
async fn keys_and_tokens_from_the_cli_log_in_with_openssh() {
    const TEST: &str = "keys_and_tokens_from_the_cli_log_in_with_openssh";
    let fleet = TestFleet::builder().workers(1).start().await;
    let Some(ssh) = OpenSsh::for_gateway(TEST, fleet.cp.ssh_addr()) else {
        return fleet.stop().await;
    };
    let dir = tempfile::tempdir().unwrap();
    let id = id_of(&fleet.api.create_sandbox(json!({})).await);

    // status names the gateway and its host key
    let (out, err, code) = run(&fleet, dir.path(), &["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("ssh gateway    {}", fleet.cp.ssh_addr()))
            && out.contains("host key SHA256:"),
        "{out}"
    );

    // a token alone on stdout, how to use it on stderr
    let (token, err, code) = run(&fleet, dir.path(), &["sandbox", "ssh-token", &id]).await;
    assert_eq!(code, 0, "{err}");
    let token = token.trim();
    assert!(token.starts_with("bst-"), "{token}");
    assert!(
        err.contains(&format!("ssh -p {}", fleet.cp.ssh_addr().port())),
        "{err}"
    );
    let login = ssh.ssh(token, None, &[], "echo via token").await;
    assert_eq!(String::from_utf8_lossy(&login.stdout), "via token\n");

    // --known-hosts: OpenSSH checking host keys strictly trusts the gateway at once
    let known_hosts = dir.path().join("kh/known_hosts");
    let (token, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "sandbox",
            "ssh-token",
            &id,
            "--known-hosts",
            &known_hosts.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let addr = fleet.cp.ssh_addr();
    let strict = Command::new("ssh")
        .args(["-F", "/dev/null", "-p", &addr.port().to_string()])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg(format!("{}@{}", token.trim(), addr.ip()))
        .arg("echo checked")
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&strict.stdout),
        "checked\n",
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );

    // a key: add, list, log in, remove, refused
    let key = ssh.keygen("cli_key");
    let public = key.with_extension("pub");
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "ssh-keys",
            "add",
            &public.display().to_string(),
            "--name",
            "laptop",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("added sshk-"), "{out}");
    let key_id = out.split_whitespace().nth(1).unwrap().to_owned();
    let (out, _, _) = run(&fleet, dir.path(), &["ssh-keys", "list"]).await;
    assert!(out.contains(&key_id) && out.contains("laptop"), "{out}");
    let login = ssh.ssh(&id, Some(&key), &[], "echo via key").await;
    assert_eq!(String::from_utf8_lossy(&login.stdout), "via key\n");
    let (out, err, code) = run(&fleet, dir.path(), &["ssh-keys", "remove", &key_id, "-y"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("removed {key_id}")), "{out}");
    let (out, _, _) = run(&fleet, dir.path(), &["ssh-keys", "list", "-q"]).await;
    assert!(!out.contains(&key_id), "{out}");
    let login = ssh.ssh(&id, Some(&key), &[], "true").await;
    assert_eq!(login.status.code(), Some(255));

    // a bad key file is a clear error
    std::fs::write(dir.path().join("junk.pub"), "not a key").unwrap();
    let (_, err, code) = run(&fleet, dir.path(), &["ssh-keys", "add", "junk.pub"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not an OpenSSH public key"), "{err}");
    fleet.stop().await;
}
