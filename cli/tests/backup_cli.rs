//! `berth backup` and `berth restore` as an operator runs them: the real binary,
//! pointed with `--data-dir` at the store of a control plane running in this process.

use std::process::{Command, Output};

use berth_testkit::TestControlPlane;

/// Runs the `berth` binary off the runtime's threads, with none of the `BERTH_*`
/// variables that would point it elsewhere.
async fn berth(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&args)
            .env_remove("BERTH_CONFIG")
            .env_remove("BERTH_DATA_DIR")
            .env_remove("BERTH_DATABASE_URL")
            .output()
            .expect("run berth")
    })
    .await
    .expect("the berth process")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn backup_while_serving_and_restore_once_stopped() {
    let cp = TestControlPlane::try_start_on("", |_| {})
        .await
        .expect("start control plane");
    let data_dir = cp.config.data_dir.display().to_string();
    let file = cp.dir.path().join("backup.db").display().to_string();

    let output = berth(&["backup", &file, "--data-dir", &data_dir]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("integrity ok"), "{printed}");
    assert!(printed.contains("1 api keys"), "{printed}");

    let output = berth(&["backup", &file, "--data-dir", &data_dir]).await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--force"), "{}", stderr(&output));
    let output = berth(&["backup", &file, "--force", "--data-dir", &data_dir]).await;
    assert!(output.status.success(), "{}", stderr(&output));

    let output = berth(&["restore", &file, "--data-dir", &data_dir]).await;
    assert!(!output.status.success(), "restored under a running server");
    assert!(
        stderr(&output).contains("stop every berth serve"),
        "{}",
        stderr(&output)
    );

    let output = berth(&[
        "backup",
        &file,
        "--database-url",
        "postgres://berth:hunter2@db/berth",
    ])
    .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("pg_dump"), "{}", stderr(&output));
    assert!(!stderr(&output).contains("hunter2"));

    let (dir, config) = cp.stop_keeping_data().await;
    let output = berth(&["restore", &file, "--data-dir", &data_dir]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("the previous store is kept as"),
        "{}",
        stdout(&output)
    );
    let cp = TestControlPlane::restart(dir, config).await;
    assert!(
        cp.first_admin_key.is_none(),
        "the restored store has its key"
    );
    cp.stop().await;
}
