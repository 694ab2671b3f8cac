//! `berth keys create|list|revoke` as an operator runs them: the built binary against
//! an in-process control plane with a mock worker. A key minted read-only lists but
//! cannot exec; the key is alone on stdout; revoking asks first and takes effect at once.

use std::path::Path;
use std::process::Stdio;

use berth_testkit::{Api, TestFleet, id_of};
use serde_json::{Value, json};
use tokio::process::Command;

/// The binary with the fleet's URL and `key` in its environment and nothing else.
fn berth(fleet: &TestFleet, dir: &Path, key: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .current_dir(dir)
        .env("BERTH_API_URL", fleet.cp.api_url())
        .env("BERTH_API_KEY", key)
        .env("BERTH_CLIENT_CONFIG", dir.join("client.yaml"))
        .env("NO_COLOR", "1")
        .env_remove("BERTH_CONTEXT")
        .env_remove("BERTH_API_KEY_FILE")
        .env_remove("BERTH_DATA_DIR")
        .env_remove("BERTH_CA_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(fleet: &TestFleet, dir: &Path, key: &str, args: &[&str]) -> Run {
    let mut command = berth(fleet, dir, key);
    command.args(args);
    let output = command.output().await.expect("berth runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn ok(fleet: &TestFleet, dir: &Path, key: &str, args: &[&str]) -> Run {
    let out = run(fleet, dir, key, args).await;
    assert_eq!(out.code, Some(0), "berth {args:?}: {}", out.stderr);
    out
}

#[tokio::test]
async fn a_read_only_key_minted_with_the_cli_lists_sandboxes_but_cannot_exec() {
    let fleet = TestFleet::start().await;
    fleet.api.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = fleet.api.key.clone();
    let id = id_of(&fleet.api.create_sandbox(json!({"provider": "mock"})).await);

    let created = ok(
        &fleet,
        dir.path(),
        &admin,
        &["keys", "create", "--scopes", "read", "--name", "viewer"],
    )
    .await;
    // the key alone on stdout, so KEY=$(berth keys create …) works
    let key = created.stdout.strip_suffix('\n').unwrap().to_owned();
    assert!(
        key.starts_with("berth_") && !key.contains(char::is_whitespace),
        "{key:?}"
    );
    assert!(created.stderr.contains("scopes read"), "{}", created.stderr);
    assert!(created.stderr.contains("viewer"), "{}", created.stderr);

    let listed = ok(&fleet, dir.path(), &key, &["sandbox", "list", "-q"]).await;
    assert!(listed.stdout.contains(&id), "{}", listed.stdout);
    let refused = run(
        &fleet,
        dir.path(),
        &key,
        &["sandbox", "exec", &id, "--", "echo hi"],
    )
    .await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("exec scope"), "{}", refused.stderr);
    // the same over HTTP: 403
    let reader = Api {
        key: key.clone(),
        ..fleet.api.clone()
    };
    let (status, body) = reader.exec(&id, json!({"command": "echo hi"})).await;
    assert_eq!(status, 403, "{body}");
    // nor can it mint keys
    let refused = run(
        &fleet,
        dir.path(),
        &key,
        &["keys", "create", "--scopes", "admin"],
    )
    .await;
    assert_eq!(refused.code, Some(1));
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);

    // -o json prints the whole answer
    let json_out = ok(
        &fleet,
        dir.path(),
        &admin,
        &[
            "keys",
            "create",
            "--scopes",
            "read,exec",
            "--expires",
            "30d",
            "-o",
            "json",
        ],
    )
    .await;
    let created: Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_eq!(created["scopes"], json!(["read", "exec"]));
    assert!(created["key"].as_str().unwrap().starts_with("berth_"));
    assert!(created["expires_at"].is_string());

    let bad = run(
        &fleet,
        dir.path(),
        &admin,
        &["keys", "create", "--scopes", "root"],
    )
    .await;
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("known scopes"), "{}", bad.stderr);
    fleet.stop().await;
}

#[tokio::test]
async fn keys_are_listed_and_revoked_after_asking() {
    let fleet = TestFleet::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = fleet.api.key.clone();
    let created = ok(
        &fleet,
        dir.path(),
        &admin,
        &[
            "keys",
            "create",
            "--scopes",
            "read",
            "--name",
            "ci",
            "--expires",
            "720h",
            "-o",
            "json",
        ],
    )
    .await;
    let created: Value = serde_json::from_str(&created.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    ok(&fleet, dir.path(), &key, &["workers", "list"]).await;

    let table = ok(&fleet, dir.path(), &admin, &["keys", "list"])
        .await
        .stdout;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "NAME",
            "TEAM",
            "USER",
            "ROLE",
            "SCOPES",
            "AGE",
            "EXPIRES",
            "LAST USED",
            "REVOKED"
        ]
    );
    let row = lines
        .find(|line| line.starts_with(&id))
        .expect("the key's row");
    assert!(row.contains("ci") && row.contains("read"), "{row}");
    assert!(row.contains("in 29d") || row.contains("in 30d"), "{row}");
    assert!(row.contains("ago"), "used: {row}");
    assert!(
        !table.contains(key.rsplit('_').next().unwrap()),
        "a secret listed"
    );
    let quiet = ok(&fleet, dir.path(), &admin, &["keys", "list", "-q"])
        .await
        .stdout;
    assert!(quiet.lines().any(|line| line == id), "{quiet}");
    let bare = ok(
        &fleet,
        dir.path(),
        &admin,
        &["keys", "list", "--no-headers"],
    )
    .await
    .stdout;
    assert!(!bare.contains("LAST USED"), "{bare}");

    // without a terminal or --yes nothing is revoked
    let refused = run(&fleet, dir.path(), &admin, &["keys", "revoke", &id]).await;
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    ok(&fleet, dir.path(), &key, &["workers", "list"]).await;

    let prefix = &id[..6];
    let revoked = ok(
        &fleet,
        dir.path(),
        &admin,
        &["keys", "revoke", prefix, "-y"],
    )
    .await;
    assert!(
        revoked.stdout.starts_with(&format!("revoked {id}")),
        "{}",
        revoked.stdout
    );
    let after = run(&fleet, dir.path(), &key, &["workers", "list"]).await;
    assert_eq!(after.code, Some(1));
    assert!(after.stderr.contains("was revoked"), "{}", after.stderr);

    // the admin key is the last admin key: kept, and the message says why
    let admin_id = admin.split('_').nth(1).unwrap();
    let last = run(
        &fleet,
        dir.path(),
        &admin,
        &["keys", "revoke", admin_id, "-y"],
    )
    .await;
    assert_eq!(last.code, Some(1));
    assert!(
        last.stderr.contains("last usable admin key"),
        "{}",
        last.stderr
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_team_read_key_minted_with_the_cli_sees_its_team_only_and_cannot_exec() {
    let fleet = TestFleet::start().await;
    fleet.api.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = fleet.api.key.clone();
    ok(
        &fleet,
        dir.path(),
        &admin,
        &["teams", "create", "a", "--max-sandboxes", "3"],
    )
    .await;
    ok(
        &fleet,
        dir.path(),
        &admin,
        &["users", "add", "--team", "a", "alice"],
    )
    .await;
    let writer = ok(
        &fleet,
        dir.path(),
        &admin,
        &[
            "keys",
            "create",
            "--team",
            "a",
            "--user",
            "alice",
            "--scopes",
            "read,write",
        ],
    )
    .await;
    let writer = writer.stdout.trim().to_owned();
    let theirs = Api {
        key: writer,
        ..fleet.api.clone()
    };
    let ours = id_of(&theirs.create_sandbox(json!({"provider": "mock"})).await);
    let other = id_of(&fleet.api.create_sandbox(json!({"provider": "mock"})).await);

    let created = ok(
        &fleet,
        dir.path(),
        &admin,
        &[
            "keys", "create", "--team", "a", "--scopes", "read", "--name", "viewer",
        ],
    )
    .await;
    let key = created.stdout.trim().to_owned();
    let listed = ok(&fleet, dir.path(), &key, &["sandbox", "list", "-q"]).await;
    assert!(listed.stdout.contains(&ours), "{}", listed.stdout);
    assert!(!listed.stdout.contains(&other), "{}", listed.stdout);
    let reader = Api {
        key: key.clone(),
        ..fleet.api.clone()
    };
    let (status, body) = reader.exec(&ours, json!({"command": "echo hi"})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = reader.get(&format!("/sandboxes/{other}")).await;
    assert_eq!(status, 404, "another team's sandbox: {body}");

    // keys list shows the team, user and role
    let keys = ok(&fleet, dir.path(), &admin, &["keys", "list", "-o", "json"]).await;
    let keys: Value = serde_json::from_str(&keys.stdout).expect("json");
    let alice = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["user"] == "alice")
        .expect("alice's key listed");
    assert_eq!(
        (alice["team"].as_str(), alice["role"].as_str()),
        (Some("a"), Some("member"))
    );
    fleet.stop().await;
}
