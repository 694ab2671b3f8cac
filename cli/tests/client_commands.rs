//! The `berth` client commands as an operator runs them: the built binary against an
//! in-process control plane with a mock worker. Long calls outlive the old 60 s client
//! timeout, a closed stdout ends a command quietly, ids may be prefixes, destructive
//! commands ask first, exec timeouts end with 124, completion loads in bash.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::{TestFleet, id_of};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The binary with the fleet's URL and admin key in its environment, a client config
/// of its own (absent until a test writes it), no colour, run in an empty directory.
fn berth(fleet: &TestFleet, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
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
        .kill_on_drop(true);
    command
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(mut command: Command) -> Run {
    let output = command.output().await.expect("berth runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn berth_ok(fleet: &TestFleet, dir: &Path, args: &[&str]) -> String {
    let mut command = berth(fleet, dir);
    command.args(args);
    let out = run(command).await;
    assert_eq!(out.code, Some(0), "berth {args:?}: {}", out.stderr);
    out.stdout
}

async fn sandbox(fleet: &TestFleet) -> String {
    id_of(&fleet.api.create_sandbox(json!({"provider": "mock"})).await)
}

fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Bug: every request gave up after 60 s. A 70 s command, whole and streamed at once,
/// runs to its end with no timeout lowered anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execs_longer_than_a_minute_finish() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let id = sandbox(&fleet).await;
    let exec = |stream: bool| {
        let mut command = berth(&fleet, dir.path());
        command.args(["sandbox", "exec", "--timeout", "120s"]);
        if stream {
            command.arg("--stream");
        }
        command.args([id.as_str(), "--", "sleep 70; echo done"]);
        run(command)
    };
    let started = std::time::Instant::now();
    let (streamed, whole) = tokio::join!(exec(true), exec(false));
    for (what, out) in [("streamed", streamed), ("whole", whole)] {
        assert_eq!(out.code, Some(0), "{what} exec: {}", out.stderr);
        assert_eq!(out.stdout, "done\n", "{what} exec");
    }
    assert!(started.elapsed() >= Duration::from_secs(70));
    fleet.stop().await;
}

/// Bug: `… | head -1` made the CLI panic with "Broken pipe" (exit 101).
#[tokio::test]
async fn a_closed_stdout_ends_quietly() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let id = sandbox(&fleet).await;
    for stream in [false, true] {
        let mut command = berth(&fleet, dir.path());
        command.args(["sandbox", "exec"]);
        if stream {
            command.arg("--stream");
        }
        command
            .args([id.as_str(), "--", "generate --lines 100000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("berth starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next_line().await.expect("a line");
        assert!(first.is_some(), "no output");
        drop(lines); // closes the pipe's read end, as head does
        let output = child.wait_with_output().await.expect("berth ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "stream {stream}: {stderr}"
        );
        assert_ne!(output.status.code(), Some(101), "stream {stream}: {stderr}");
    }
    fleet.stop().await;
}

#[tokio::test]
async fn an_exec_that_times_out_exits_124() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let id = sandbox(&fleet).await;
    for stream in [false, true] {
        let mut command = berth(&fleet, dir.path());
        command.args(["sandbox", "exec", "--timeout", "1s"]);
        if stream {
            command.arg("--stream");
        }
        command.args([id.as_str(), "--", "sleep 30"]);
        let out = run(command).await;
        assert_eq!(out.code, Some(124), "stream {stream}: {}", out.stderr);
        assert!(out.stderr.contains("TIMEOUT"), "{}", out.stderr);
    }
    // and a command's own status passes through
    let mut command = berth(&fleet, dir.path());
    command.args(["sandbox", "exec", &id, "--", "exit 3"]);
    assert_eq!(run(command).await.code, Some(3));
    fleet.stop().await;
}

#[tokio::test]
async fn ids_may_be_unique_prefixes() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let id = sandbox(&fleet).await;
    let other = sandbox(&fleet).await;
    // the shortest prefix of `id` that `other` does not share
    let common = id
        .chars()
        .zip(other.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let unique = &id[..=common];
    let echoed = berth_ok(
        &fleet,
        dir.path(),
        &["sandbox", "exec", unique, "--", "echo hi"],
    )
    .await;
    assert_eq!(echoed, "hi\n");
    let shown = berth_ok(
        &fleet,
        dir.path(),
        &["sandbox", "get", unique, "-o", "json"],
    )
    .await;
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["id"], id);

    let mut command = berth(&fleet, dir.path());
    command.args(["sandbox", "get", "sbx-"]);
    let out = run(command).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("ambiguous") && out.stderr.contains(&id) && out.stderr.contains(&other),
        "{}",
        out.stderr
    );

    let worker = fleet.worker(0).worker_id.clone();
    let shown = berth_ok(
        &fleet,
        dir.path(),
        &["workers", "get", &worker[..worker.len() - 1], "-o", "json"],
    )
    .await;
    assert!(shown.contains(&worker), "{shown}");
    fleet.stop().await;
}

#[tokio::test]
async fn lists_filter_and_print_ids_tables_and_yaml() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let labelled = id_of(
        &fleet
            .api
            .create_sandbox(json!({"provider": "mock", "metadata": {"team": "a"}}))
            .await,
    );
    let plain = sandbox(&fleet).await;

    let ids = berth_ok(&fleet, dir.path(), &["sandbox", "list", "-q"]).await;
    assert!(ids.lines().any(|l| l == labelled) && ids.lines().any(|l| l == plain));
    let ids = berth_ok(
        &fleet,
        dir.path(),
        &["sandbox", "list", "-q", "--label", "team=a"],
    )
    .await;
    assert_eq!(ids, format!("{labelled}\n"));
    let none = berth_ok(
        &fleet,
        dir.path(),
        &["sandbox", "list", "-q", "--state", "lost,error"],
    )
    .await;
    assert_eq!(none, "");

    let table = berth_ok(&fleet, dir.path(), &["sandbox", "list"]).await;
    let header = table.lines().next().expect("a header");
    assert!(
        header.starts_with("ID") && header.contains("AGE"),
        "{table}"
    );
    assert!(table.contains(" ago") || table.contains("in "), "{table}");
    let bare = berth_ok(&fleet, dir.path(), &["sandbox", "list", "--no-headers"]).await;
    assert_eq!(bare.lines().count(), 2, "{bare}");
    let wide = berth_ok(&fleet, dir.path(), &["sandbox", "list", "-o", "wide"]).await;
    assert!(
        wide.lines().next().expect("header").contains("GENERATION"),
        "{wide}"
    );
    let yaml = berth_ok(
        &fleet,
        dir.path(),
        &["sandbox", "get", &plain, "-o", "yaml"],
    )
    .await;
    assert!(yaml.contains(&format!("id: {plain}")), "{yaml}");

    let workers = berth_ok(&fleet, dir.path(), &["workers", "list"]).await;
    let worker = fleet.worker(0).worker_id.clone();
    let row = workers.lines().nth(1).expect("a worker row");
    assert!(
        row.starts_with(&worker) && row.contains("online"),
        "{workers}"
    );
    let online = berth_ok(
        &fleet,
        dir.path(),
        &[
            "workers",
            "list",
            "-q",
            "--status",
            "online",
            "--provider",
            "mock",
        ],
    )
    .await;
    assert_eq!(online, format!("{worker}\n"));
    let docker = berth_ok(
        &fleet,
        dir.path(),
        &["workers", "list", "-q", "--provider", "docker"],
    )
    .await;
    assert_eq!(docker, "");
    fleet.stop().await;
}

#[tokio::test]
async fn destructive_commands_ask_first() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let worker = fleet.worker(0).worker_id.clone();
    for args in [
        vec!["workers", "revoke", worker.as_str()],
        vec!["workers", "rm", "--force", worker.as_str()],
        vec!["sandbox", "prune"],
    ] {
        let mut command = berth(&fleet, dir.path());
        command.args(&args);
        let out = run(command).await;
        assert_eq!(out.code, Some(1), "{args:?}");
        assert!(out.stderr.contains("--yes"), "{args:?}: {}", out.stderr);
    }
    // nothing was revoked
    let status = berth_ok(
        &fleet,
        dir.path(),
        &["workers", "list", "-q", "--status", "online"],
    )
    .await;
    assert_eq!(status, format!("{worker}\n"));
    let pruned = berth_ok(&fleet, dir.path(), &["sandbox", "prune", "--yes"]).await;
    assert!(pruned.starts_with("pruned "), "{pruned}");
    fleet.stop().await;
}

#[tokio::test]
async fn contexts_choose_the_control_plane() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, &fleet.api.key).expect("key written");
    // without the URL and key in the environment, only the context finds the fleet
    let bare = |fleet: &TestFleet| {
        let mut command = berth(fleet, dir.path());
        command
            .env_remove("BERTH_API_URL")
            .env_remove("BERTH_API_KEY");
        command
    };
    let mut add = bare(&fleet);
    add.args([
        "context",
        "add",
        "test",
        "--api-url",
        &fleet.cp.api_url(),
        "--api-key-file",
        &key_file.display().to_string(),
    ]);
    assert_eq!(run(add).await.code, Some(0));
    let config = dir.path().join("client.yaml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config)
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut current = bare(&fleet);
    current.args(["context", "current"]);
    assert_eq!(run(current).await.stdout, "test\n");
    let mut list = bare(&fleet);
    list.args(["workers", "list", "-q"]);
    let out = run(list).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, format!("{}\n", fleet.worker(0).worker_id));

    // the environment beats the context
    let mut elsewhere = bare(&fleet);
    elsewhere
        .env("BERTH_API_URL", "http://127.0.0.1:9")
        .args(["workers", "list"]);
    let out = run(elsewhere).await;
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("127.0.0.1:9"), "{}", out.stderr);

    let mut version = bare(&fleet);
    version.arg("version");
    let out = run(version).await;
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.starts_with("client: berth ") && out.stdout.contains("server: berth "),
        "{}",
        out.stdout
    );

    let mut rm = bare(&fleet);
    rm.args(["context", "rm", "test"]);
    assert_eq!(run(rm).await.code, Some(0));
    let mut version = bare(&fleet);
    version
        .env("BERTH_API_URL", "http://127.0.0.1:9")
        .arg("version");
    let out = run(version).await;
    assert_eq!(
        out.code,
        Some(0),
        "the client part answers without a server"
    );
    assert!(out.stdout.contains("server: unreachable"), "{}", out.stdout);
    fleet.stop().await;
}

fn berth_plain() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    command.env("NO_COLOR", "1");
    command
}

#[test]
fn bash_completion_completes_subcommands() {
    let dir = workdir();
    let script: PathBuf = dir.path().join("berth.bash");
    let output = berth_plain()
        .args(["completion", "bash"])
        .output()
        .expect("berth runs");
    assert!(output.status.success());
    std::fs::write(&script, &output.stdout).expect("script written");
    let line = format!(
        "source {}; COMP_WORDS=(berth sandbox e); COMP_CWORD=2; COMP_LINE=\"berth sandbox e\"; \
         COMP_POINT=${{#COMP_LINE}}; _berth berth e sandbox; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let completed = std::process::Command::new("bash")
        .args(["-c", &line])
        .output()
        .expect("bash runs");
    let offered = String::from_utf8_lossy(&completed.stdout);
    assert!(
        offered.lines().any(|l| l.trim() == "exec"),
        "offered: {offered:?}; stderr: {}",
        String::from_utf8_lossy(&completed.stderr)
    );
}

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = workdir();
    let status = berth_plain()
        .args(["man", "--dir"])
        .arg(dir.path())
        .status()
        .expect("berth runs");
    assert!(status.success());
    for page in [
        "berth.1",
        "berth-sandbox.1",
        "berth-sandbox-exec.1",
        "berth-workers-rm.1",
        "berth-teams-delete.1",
        "berth-users-remove.1",
        "berth-quota.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.contains(".TH"), "{page}");
    }
}

#[test]
fn help_hides_client_flags_from_server_commands() {
    for server in ["serve", "worker"] {
        let output = berth_plain()
            .args([server, "--help"])
            .output()
            .expect("runs");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("--log-format"), "{server}: {help}");
        assert!(
            !help.contains("--api-url") && !help.contains("--output"),
            "{server}: {help}"
        );
    }
    let output = berth_plain().arg("--help").output().expect("runs");
    assert!(String::from_utf8_lossy(&output.stdout).contains("124"));
    let output = berth_plain()
        .args(["sandbox", "nope"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
}

/// `workers list --watch` into a pipe prints the table, then again only when it changed.
#[tokio::test]
async fn watch_prints_again_when_the_table_changes() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let worker = fleet.worker(0).worker_id.clone();
    let mut command = berth(&fleet, dir.path());
    command
        .args(["workers", "list", "--watch", "--no-headers"])
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("berth starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("read").expect("a row");
    assert!(
        first.starts_with(&worker) && first.contains("online"),
        "{first}"
    );
    let (status, _) = fleet
        .api
        .post(&format!("/workers/{worker}/cordon"), Value::Null)
        .await;
    assert_eq!(status, 200);
    let next = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the changed table within 20 s")
        .expect("read")
        .expect("a row");
    assert!(next.contains("cordoned"), "{next}");
    child.kill().await.expect("stopped");
    fleet.stop().await;
}

/// `workers drain --watch` ends once the drain is complete, with one clear line per
/// change, and the worker's STATUS is one word.
#[tokio::test]
async fn drain_watch_follows_the_drain_to_its_end() {
    let fleet = TestFleet::start().await;
    let dir = workdir();
    let worker = fleet.worker(0).worker_id.clone();
    let mut command = berth(&fleet, dir.path());
    command.args(["workers", "drain", "--watch", &worker]);
    let out = tokio::time::timeout(Duration::from_secs(60), run(command))
        .await
        .expect("the drain completes");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&format!("{worker}: drained, no sandboxes left").as_str()),
        "{}",
        out.stdout
    );
    let mut unique = lines.clone();
    unique.dedup();
    assert_eq!(unique, lines, "a line repeated: {}", out.stdout);
    let row = berth_ok(&fleet, dir.path(), &["workers", "list", "--no-headers"]).await;
    let status = row.split_whitespace().nth(1).expect("a status");
    assert_eq!(status, "drained", "{row}");
    fleet.stop().await;
}

/// `workers rm` and `sandbox prune --state` against the real API: removal is refused
/// while the worker holds a sandbox, a retired worker goes at once, `--force` marks
/// what it held lost, and pruning `lost` clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_rm_and_prune_by_state() {
    let mut fleet = TestFleet::builder().workers(2).start().await;
    let dir = workdir();
    let id = sandbox(&fleet).await;
    let (_, view) = fleet.api.get(&format!("/sandboxes/{id}")).await;
    let holder = view["worker_id"].as_str().expect("placed").to_owned();
    let other_index = if fleet.worker(0).worker_id == holder {
        1
    } else {
        0
    };
    let other = fleet.worker(other_index).worker_id.clone();

    let mut command = berth(&fleet, dir.path());
    command.args(["workers", "rm", &holder]);
    let refused = run(command).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);

    fleet.stop_worker(other_index).await;
    let out = berth_ok(&fleet, dir.path(), &["workers", "rm", &other]).await;
    assert!(
        out.contains(&format!("removed {other}: 0 sandboxes lost")),
        "{out}"
    );
    let listed = berth_ok(&fleet, dir.path(), &["workers", "list", "-q"]).await;
    assert_eq!(listed.trim(), holder, "{listed}");

    let out = berth_ok(
        &fleet,
        dir.path(),
        &["workers", "rm", &holder, "--force", "--yes"],
    )
    .await;
    assert!(out.contains("1 sandboxes lost"), "{out}");
    let (_, view) = fleet.api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(view["state"], "lost", "{view}");
    let out = berth_ok(
        &fleet,
        dir.path(),
        &["sandbox", "prune", "--state", "lost", "--yes"],
    )
    .await;
    assert!(out.contains("pruned 1 sandboxes"), "{out}");
    let listed = berth_ok(&fleet, dir.path(), &["sandbox", "list", "-q"]).await;
    assert!(!listed.contains(&id), "{listed}");
    fleet.stop().await;
}

#[tokio::test]
async fn workers_list_shows_how_each_worker_is_reached() {
    let mut fleet = TestFleet::builder()
        .worker(|config| config.listen = None)
        .start()
        .await;
    let listening = fleet
        .add_worker(|config| config.listen = Some("127.0.0.1:0".parse().unwrap()))
        .await;
    fleet.wait_online().await;
    let dir = workdir();
    let table = berth_ok(&fleet, dir.path(), &["workers", "list"]).await;
    let mut lines = table.lines();
    let headers: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("a {name} column: {table}"))
    };
    let (mode, address) = (column("MODE"), column("ADDRESS"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let row = |id: &str| {
        rows.iter()
            .find(|cells| cells[0] == id)
            .unwrap_or_else(|| panic!("{id} listed: {table}"))
    };
    assert_eq!(row("w0")[mode], "dial-out", "{table}");
    assert_eq!(row("w0")[address], "-", "{table}");
    assert_eq!(row("w1")[mode], "listen", "{table}");
    let listen_addr = fleet.worker(listening).listen_addr().to_string();
    assert_eq!(row("w1")[address], listen_addr, "{table}");
    fleet.stop().await;
}
