//! Which store a test process's control planes get (`BERTH_TEST_DATABASE`), and
//! [`rerun_on_postgres`], which runs a whole test binary again on Postgres.

use crate::postgres;

/// The store test control planes get by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDatabase {
    Sqlite,
    Postgres,
}

impl TestDatabase {
    /// Names the backend for the whole test process.
    pub const ENV: &'static str = "BERTH_TEST_DATABASE";

    /// `BERTH_TEST_DATABASE`: `postgres`, or SQLite when unset or empty.
    pub fn from_env() -> Self {
        match std::env::var(Self::ENV).as_deref() {
            Ok("postgres") => Self::Postgres,
            Ok("sqlite" | "") | Err(_) => Self::Sqlite,
            Ok(other) => panic!("{}={other:?}: expected sqlite or postgres", Self::ENV),
        }
    }
}

/// A fresh Postgres database for a test process that asked for Postgres.
pub(crate) async fn postgres_database() -> String {
    let server = postgres::server().unwrap_or_else(|| {
        panic!(
            "{}=postgres but no postgres binaries were found",
            TestDatabase::ENV
        )
    });
    server.create_database().await
}

/// Runs every other test of this test binary again with a Postgres store: a child
/// process of the same binary with `BERTH_TEST_DATABASE=postgres`, skipping the test
/// named `entry` (the caller). Fails with the child's output when any test fails
/// there; skips (visibly) when Postgres is not installed.
pub fn rerun_on_postgres(entry: &str) {
    if std::env::var_os(TestDatabase::ENV).is_some() {
        // this process already runs on the backend someone chose
        return;
    }
    if !postgres::available(entry) {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = std::process::Command::new(&exe);
    command
        .args(["--exact", "--skip", entry])
        .env(TestDatabase::ENV, "postgres")
        .stdin(std::process::Stdio::null());
    if let Ok(threads) = std::env::var("BERTH_POSTGRES_TEST_THREADS") {
        command.arg(format!("--test-threads={threads}"));
    }
    let output = command.output().expect("run the test binary on postgres");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the suite failed on postgres ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary = stdout
        .lines()
        .rfind(|line| line.starts_with("test result:"))
        .unwrap_or("no summary");
    println!("on postgres: {summary}");
}
