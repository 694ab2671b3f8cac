//! `berth templates apply|list|get|delete` and `berth sandbox create --template`, as a
//! user runs them: the built binary against a mock fleet, with a Podfile-style YAML
//! document.

use std::path::Path;

use berth_testkit::TestFleet;
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

const PODFILE: &str = "\
base: alpine:3.20
memory_mb: 256
env:
  GREETING: hello from a podfile
  PORT: 8080
on_start: |
  echo ready >> /workspace/started
";

#[tokio::test]
async fn a_podfile_is_applied_listed_spawned_and_deleted() {
    let fleet = TestFleet::builder().workers(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let podfile = dir.path().join("podfile.yaml");
    std::fs::write(&podfile, PODFILE).unwrap();
    let file = podfile.to_str().unwrap();

    // a Podfile names no template
    let (_, err, code) = run(&fleet, dir.path(), &["templates", "apply", "-f", file]).await;
    assert_ne!(code, 0);
    assert!(err.contains("--name"), "{err}");

    let apply = ["templates", "apply", "-f", file, "--name", "api"];
    let (out, err, code) = run(&fleet, dir.path(), &apply).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "template api created (version 1)");
    let (out, _, _) = run(&fleet, dir.path(), &apply).await;
    assert_eq!(out.trim(), "template api unchanged (version 1)");
    std::fs::write(&podfile, PODFILE.replace("256", "128")).unwrap();
    let (out, _, _) = run(&fleet, dir.path(), &apply).await;
    assert_eq!(out.trim(), "template api updated (version 2)");

    let (out, err, code) = run(&fleet, dir.path(), &["templates", "list"]).await;
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with("api")).expect(&out);
    assert!(
        row.contains(" 2 ") && row.contains("alpine:3.20") && row.contains("128"),
        "{out}"
    );
    let (out, _, _) = run(&fleet, dir.path(), &["templates", "list", "-q"]).await;
    assert_eq!(out, "api\n");
    let (out, err, code) = run(&fleet, dir.path(), &["templates", "get", "api"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("image: alpine:3.20") && out.contains("GREETING: hello from a podfile"),
        "{out}"
    );

    let (id, err, code) = run(
        &fleet,
        dir.path(),
        &["sandbox", "create", "--template", "api"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "sandbox",
            "exec",
            id,
            "--",
            "echo $GREETING; cat /workspace/started",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from a podfile\nready\n");

    // stop and start from the CLI: the file stays, commands wait for the start
    let (out, err, code) = run(&fleet, dir.path(), &["sandbox", "stop", id]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{id} stopped\n"));
    let (_, err, code) = run(&fleet, dir.path(), &["sandbox", "exec", id, "--", "true"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("is stopped; start it with"), "{err}");
    let (out, err, code) = run(&fleet, dir.path(), &["sandbox", "start", id]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{id} running\n"));
    let (out, _, _) = run(
        &fleet,
        dir.path(),
        &["sandbox", "exec", id, "--", "cat /workspace/started"],
    )
    .await;
    assert_eq!(out, "ready\nready\n", "on_start ran again at the start");

    let (_, err, code) = run(
        &fleet,
        dir.path(),
        &["sandbox", "create", "--template", "missing"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("template \"missing\" not found"), "{err}");

    let (out, err, code) = run(&fleet, dir.path(), &["templates", "delete", "api", "-y"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "deleted template api");
    let (_, err, code) = run(&fleet, dir.path(), &["templates", "get", "api"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
    fleet.stop().await;
}

#[tokio::test]
async fn a_secret_set_from_stdin_reaches_a_sandbox_of_its_template() {
    use tokio::io::AsyncWriteExt;
    let fleet = TestFleet::builder().workers(1).start().await;
    let dir = tempfile::tempdir().unwrap();

    let mut child = berth(&fleet, dir.path())
        .args(["secrets", "set", "API_TOKEN"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"tok-from-stdin\n").await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "secret API_TOKEN set\n"
    );
    let file = dir.path().join("token.txt");
    std::fs::write(&file, "from-a-file").unwrap();
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "secrets",
            "set",
            "FILE_TOKEN",
            "--from-file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "secret FILE_TOKEN set\n");

    let (out, err, code) = run(&fleet, dir.path(), &["secrets", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("API_TOKEN") && out.contains("FILE_TOKEN"),
        "{out}"
    );
    assert!(!out.contains("tok-from-stdin"), "{out}");

    let podfile = dir.path().join("podfile.yaml");
    std::fs::write(&podfile, "secrets: [API_TOKEN, FILE_TOKEN]\n").unwrap();
    let (_, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "templates",
            "apply",
            "-f",
            podfile.to_str().unwrap(),
            "--name",
            "ci",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (id, err, code) = run(
        &fleet,
        dir.path(),
        &["sandbox", "create", "--template", "ci"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &[
            "sandbox",
            "exec",
            id.trim(),
            "--",
            "echo $API_TOKEN $FILE_TOKEN",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "tok-from-stdin from-a-file\n");

    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &["secrets", "delete", "API_TOKEN", "-y"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "deleted secret API_TOKEN\n");
    let (_, err, code) = run(
        &fleet,
        dir.path(),
        &["sandbox", "create", "--template", "ci"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("has no secret API_TOKEN"), "{err}");
    fleet.stop().await;
}

const BUILT: &str = "\
on_create: |
  mkdir -p /opt && echo baked in > /opt/baked
on_start: |
  cat /opt/baked > /workspace/seen
";

#[tokio::test]
async fn create_wait_draws_the_phases_and_prebuild_reports_each_worker() {
    let fleet = TestFleet::builder().workers(2).start().await;
    let dir = tempfile::tempdir().unwrap();
    let podfile = dir.path().join("podfile.yaml");
    std::fs::write(&podfile, BUILT).unwrap();
    let file = podfile.to_str().unwrap();
    let (_, err, code) = run(
        &fleet,
        dir.path(),
        &["templates", "apply", "-f", file, "--name", "baked"],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // every worker builds it once; a second prebuild finds it on each
    let (out, err, code) = run(&fleet, dir.path(), &["templates", "prebuild", "baked"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a line per worker: {out}");
    assert!(
        lines.iter().all(|l| l.contains("  built  berth/built:")),
        "{out}"
    );
    let (out, _, code) = run(&fleet, dir.path(), &["templates", "prebuild", "baked"]).await;
    assert_eq!(code, 0);
    assert!(
        out.lines().all(|l| l.contains("  reused  berth/built:")),
        "{out}"
    );

    // the stepper on stderr, the id on stdout
    let (out, err, code) = run(
        &fleet,
        dir.path(),
        &["sandbox", "create", "--template", "baked", "--wait"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id = out.trim();
    assert!(id.starts_with("sbx-"), "{out}");
    for step in [
        "✓ scheduled",
        "✓ building image",
        "(reused berth/built:",
        "✓ creating",
        "✓ on_start",
        "✓ ready",
    ] {
        assert!(
            err.contains(step),
            "{step:?} missing from the stepper:\n{err}"
        );
    }
    let (out, _, code) = run(
        &fleet,
        dir.path(),
        &["sandbox", "exec", id, "--", "cat /workspace/seen"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "baked in\n"));

    // a failing on_start: ✗ at that phase, exit 1 naming the sandbox and why
    std::fs::write(&podfile, "on_start: echo nope >&2; exit 4\n").unwrap();
    let (_, err, code) = run(
        &fleet,
        dir.path(),
        &["templates", "apply", "-f", file, "--name", "failing"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (_, err, code) = run(
        &fleet,
        dir.path(),
        &["sandbox", "create", "--template", "failing", "--wait"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("✗ on_start"), "{err}");
    assert!(
        err.contains("failed: the template's on_start exited with 4"),
        "{err}"
    );

    // nothing to build is said so
    let (_, err, code) = run(&fleet, dir.path(), &["templates", "prebuild", "failing"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("nothing to build"), "{err}");
}
