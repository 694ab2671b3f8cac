//! `berth tokens create --pool --label`, the POOL and LABELS columns of `berth
//! workers` and `berth sandbox create --constraint`, as an operator runs them: the
//! built binary against an in-process control plane, a worker enrolled with the token
//! it printed.

use std::path::Path;
use std::process::Stdio;

use berth_testkit::TestFleet;
use serde_json::{Value, json};
use tokio::process::Command;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The binary with the fleet's URL and admin key in its environment and nothing else.
async fn run(fleet: &TestFleet, dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(dir)
        .env("BERTH_API_URL", fleet.cp.api_url())
        .env("BERTH_API_KEY", &fleet.api.key)
        .env("BERTH_CLIENT_CONFIG", dir.join("client.yaml"))
        .env("NO_COLOR", "1")
        .env_remove("BERTH_CONTEXT")
        .env_remove("BERTH_API_KEY_FILE")
        .env_remove("BERTH_DATA_DIR")
        .env_remove("BERTH_CA_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .args(args)
        .output()
        .await
        .expect("berth runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn ok(fleet: &TestFleet, dir: &Path, args: &[&str]) -> Run {
    let out = run(fleet, dir, args).await;
    assert_eq!(out.code, Some(0), "berth {args:?}: {}", out.stderr);
    out
}

#[tokio::test]
async fn a_token_created_with_a_pool_and_labels_places_its_worker_there() {
    let mut fleet = TestFleet::builder().workers(0).start().await;
    let dir = tempfile::tempdir().unwrap();
    let created = ok(
        &fleet,
        dir.path(),
        &[
            "tokens",
            "create",
            "--pool",
            "eu",
            "--label",
            "region=eu",
            "--label",
            "disk=ssd",
        ],
    )
    .await;
    // the token alone on stdout; the pool and labels said on stderr
    let token = created.stdout.trim_end().to_owned();
    assert!(!token.contains(char::is_whitespace), "{token:?}");
    assert!(
        created.stderr.contains("pool eu") && created.stderr.contains("disk=ssd,region=eu"),
        "{}",
        created.stderr
    );

    let json_out = ok(
        &fleet,
        dir.path(),
        &["token", "create", "--pool", "us", "-o", "json"],
    )
    .await;
    let issued: Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_eq!(issued["pool"], "us");
    assert_eq!(issued["labels"], json!({}));

    // refused by the control plane, named
    let bad = run(
        &fleet,
        dir.path(),
        &["tokens", "create", "--pool", "Not_A_Pool"],
    )
    .await;
    assert_eq!(bad.code, Some(1), "{}", bad.stderr);
    assert!(bad.stderr.contains("\"Not_A_Pool\""), "{}", bad.stderr);
    // not KEY=VALUE: a usage error
    let bad = run(
        &fleet,
        dir.path(),
        &["tokens", "create", "--label", "region"],
    )
    .await;
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);

    fleet
        .add_worker(move |config| config.join_token = Some(token))
        .await;
    fleet.wait_online().await;
    let table = ok(&fleet, dir.path(), &["workers", "list"]).await.stdout;
    let mut lines = table.lines();
    let headers: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let cells: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let pool = headers
        .iter()
        .position(|h| *h == "POOL")
        .expect("a POOL column");
    assert_eq!(cells[0], "w0", "{table}");
    assert_eq!(cells[pool], "eu", "{table}");
    assert!(!table.contains("LABELS"), "{table}");
    let wide = ok(&fleet, dir.path(), &["workers", "list", "-o", "wide"])
        .await
        .stdout;
    assert!(
        wide.contains("LABELS") && wide.contains("disk=ssd,region=eu"),
        "{wide}"
    );

    // sandboxes go where their constraints hold
    let created = ok(
        &fleet,
        dir.path(),
        &[
            "sandbox",
            "create",
            "--constraint",
            "region=eu",
            "--constraint",
            "disk!=hdd",
            "-o",
            "json",
        ],
    )
    .await;
    let sandbox: Value = serde_json::from_str(&created.stdout).unwrap();
    assert_eq!(sandbox["worker_id"], "w0");
    let refused = run(
        &fleet,
        dir.path(),
        &["sandbox", "create", "--constraint", "region=us"],
    )
    .await;
    assert_ne!(refused.code, Some(0));
    assert!(
        refused
            .stderr
            .contains("constraint region=us excluded 1 worker (region=eu on w0)"),
        "{}",
        refused.stderr
    );
    fleet.stop().await;
}
