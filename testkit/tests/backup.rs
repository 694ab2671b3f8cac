//! `berth backup` and `berth restore` of the SQLite store: a backup taken while the
//! control plane runs and writes restores to a control plane that sees the same
//! workers, sandboxes and API keys, with an audit chain that verifies; a restore onto
//! a running control plane's store, and of a damaged, foreign or newer file, is refused
//! and leaves the store as it was; a backup does not overwrite a file unless forced.
//!
//! Always SQLite, whatever `BERTH_TEST_DATABASE` says: Postgres is backed up with
//! `pg_dump`, which `berth backup` only names.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use berth_controlplane::api_keys::{Scope, create_api_key};
use berth_controlplane::store::backup::{self, BackupError, verify_sqlite_file};
use berth_testkit::{Api, TestControlPlane, TestWorker, eventually, id_of};

const WAIT: Duration = Duration::from_secs(15);

/// A control plane on SQLite in its data dir, whatever the environment asks for.
async fn sqlite_control_plane() -> TestControlPlane {
    TestControlPlane::try_start_on("", |_| {})
        .await
        .expect("start control plane")
}

async fn listed_ids(api: &Api, what: &str) -> BTreeSet<String> {
    let (status, list) = api.get(what).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().iter().map(id_of).collect()
}

/// Execs in `sandbox` (each one an audit record) until `stop`; counts them.
fn keep_writing(
    api: Api,
    sandbox: String,
    stop: CancellationToken,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let n = done.load(Ordering::Relaxed);
            let (status, body) = api
                .exec(&sandbox, json!({"command": format!("echo {n}")}))
                .await;
            assert_eq!(status, 200, "{body}");
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_the_same_fleet() {
    let cp = sqlite_control_plane().await;
    let worker_dir = tempfile::tempdir().unwrap();
    let mut worker_config = cp.worker_config(worker_dir.path(), Some(cp.join_token(None).await));
    worker_config.id = Some("w0".into());
    let worker = TestWorker::start(worker_config.clone()).await.unwrap();
    let api = Api::new(&cp);
    api.wait_ready().await;

    let mut sandboxes = BTreeSet::new();
    for _ in 0..3 {
        sandboxes.insert(id_of(&api.create_sandbox(json!({})).await));
    }
    let viewer = create_api_key(cp.fleet.store(), "viewer", &[Scope::Read])
        .await
        .unwrap();
    let busy = sandboxes.first().unwrap().clone();

    // backups taken while execs keep appending audit records and moving the chain
    let stop = CancellationToken::new();
    let written = Arc::new(AtomicU64::new(0));
    let writer = keep_writing(api.clone(), busy, stop.clone(), written.clone());
    eventually("writes under way", WAIT, || async {
        (written.load(Ordering::Relaxed) >= 3).then_some(())
    })
    .await;
    let url = cp.config.database_url().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("berth-backup.db");
    let first = backup::backup(&url, &file, false).await.unwrap();
    let err = backup::backup(&url, &file, false).await.unwrap_err();
    assert!(matches!(err, BackupError::Exists(_)), "{err}");
    let report = backup::backup(&url, &file, true).await.unwrap();
    let writes_during = written.load(Ordering::Relaxed);
    eventually("writes after the backup", WAIT, || async {
        (written.load(Ordering::Relaxed) > writes_during + 2).then_some(())
    })
    .await;
    stop.cancel();
    writer.await.unwrap();
    let contents = report.contents;
    assert!(contents.audit_records >= first.contents.audit_records);
    assert_eq!(contents.workers, 1);
    assert_eq!(contents.sandboxes, 3);
    assert_eq!(contents.api_keys, 2, "the admin key and the viewer");
    assert!(contents.audit_records >= 6, "{contents:?}");
    assert_eq!(verify_sqlite_file(&file).await.unwrap(), contents);

    // the store of a running control plane is not replaced
    let err = backup::restore(&url, &file).await.unwrap_err();
    assert!(matches!(err, BackupError::InUse(_)), "{err}");
    assert_eq!(api.get("/status").await.0, 200, "the control plane goes on");

    // what happens after the backup is not in it
    let after = id_of(&api.create_sandbox(json!({})).await);
    worker.stop().await;
    let (data, config) = cp.stop_keeping_data().await;

    let restored = backup::restore(&url, &file).await.unwrap();
    assert_eq!(restored.contents, contents);
    let previous = restored.previous.expect("the replaced store is kept");
    assert!(
        previous
            .to_string_lossy()
            .contains("berth.db.before-restore-"),
        "{}",
        previous.display()
    );
    let kept = verify_sqlite_file(&previous).await.unwrap();
    assert_eq!(kept.sandboxes, 4, "the replaced store still has {after}");
    for suffix in ["-wal", "-shm"] {
        let mut sidecar = previous.as_os_str().to_owned();
        sidecar.push(suffix);
        assert!(!Path::new(&sidecar).exists(), "{suffix} left behind");
    }

    let cp = TestControlPlane::restart(data, config).await;
    assert!(cp.first_admin_key.is_none(), "the admin key came back");
    let api = Api::new(&cp);
    assert_eq!(
        listed_ids(&api, "/workers").await,
        BTreeSet::from(["w0".into()])
    );
    assert_eq!(listed_ids(&api, "/sandboxes").await, sandboxes);
    let (status, _) = api.get(&format!("/sandboxes/{after}")).await;
    assert_eq!(status, 404);
    let (status, body) = api
        .send(
            api.http
                .get(format!("{}/sandboxes", api.base))
                .header("X-API-Key", &viewer),
        )
        .await;
    assert_eq!(status, 200, "the viewer key still authenticates: {body}");
    let (status, verification) = api.get("/audit/verify").await;
    assert_eq!(status, 200);
    assert_eq!(verification["ok"], true, "{verification}");
    assert_eq!(verification["records"], contents.audit_records);

    // and the worker comes back to it with the identity it enrolled with
    worker_config.join_token = None;
    worker_config.control_plane = vec![cp.mesh_url()];
    let worker = TestWorker::start(worker_config).await.unwrap();
    api.wait_ready().await;
    worker.stop().await;
    cp.stop().await;
}

fn sha256(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

/// The names in `dir`, to see that a refused restore left nothing behind.
fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// What a refused restore of one file must answer.
type Expected = fn(&BackupError) -> bool;

async fn sqlite_exec(path: &Path, sql: &str) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn damaged_foreign_and_newer_files_are_refused_and_the_store_is_untouched() {
    let cp = sqlite_control_plane().await;
    let url = cp.config.database_url().unwrap();
    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("good.db");
    backup::backup(&url, &good, false).await.unwrap();
    let key = create_api_key(cp.fleet.store(), "ops", &[Scope::Admin])
        .await
        .unwrap();
    let (data, config) = cp.stop_keeping_data().await;
    let store = config.data_dir.join("berth.db");
    let before = sha256(&store);
    let names_before = names_in(&config.data_dir);

    let text = files.path().join("notes.txt");
    std::fs::write(&text, "not a database\n".repeat(500)).unwrap();

    let damaged = files.path().join("damaged.db");
    let mut bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() > 3 * 4096, "the backup has pages to damage");
    bytes[4096..3 * 4096].fill(0xa5);
    std::fs::write(&damaged, bytes).unwrap();

    let foreign = files.path().join("foreign.db");
    sqlite_exec(&foreign, "CREATE TABLE notes (body TEXT)").await;

    let newer = files.path().join("newer.db");
    std::fs::copy(&good, &newer).unwrap();
    sqlite_exec(
        &newer,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101, 'from the future', 1, x'00', 0)",
    )
    .await;

    let missing = files.path().join("missing.db");
    let cases: [(&Path, Expected); 5] = [
        (&text, |err| matches!(err, BackupError::NotSqlite { .. })),
        (&damaged, |err| {
            matches!(
                err,
                BackupError::Corrupt { .. } | BackupError::NotSqlite { .. }
            )
        }),
        (&foreign, |err| matches!(err, BackupError::NotBerth { .. })),
        (&newer, |err| matches!(err, BackupError::TooNew { .. })),
        (&missing, |err| matches!(err, BackupError::NoBackup(_))),
    ];
    for (file, expected) in cases {
        let err = backup::restore(&url, file).await.unwrap_err();
        assert!(expected(&err), "{}: {err}", file.display());
        assert_eq!(sha256(&store), before, "{}: store changed", file.display());
        assert_eq!(
            names_in(&config.data_dir),
            names_before,
            "{}: files left behind",
            file.display()
        );
    }

    // a backup never replaces a file unless forced
    let taken = sha256(&good);
    let err = backup::backup(&url, &good, false).await.unwrap_err();
    assert!(matches!(err, BackupError::Exists(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(sha256(&good), taken);

    let cp = TestControlPlane::restart(data, config).await;
    let api = Api::new(&cp);
    let (status, _) = api
        .send(
            api.http
                .get(format!("{}/status", api.base))
                .header("X-API-Key", &key),
        )
        .await;
    assert_eq!(status, 200, "the store is the one from before");
    cp.stop().await;
}

#[tokio::test]
async fn postgres_urls_are_pointed_at_pg_dump() {
    let url = "postgres://berth:hunter2@db.internal/berth";
    let err = backup::backup(url, Path::new("/nonexistent/berth.dump"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pg_dump --format=custom"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = backup::restore(url, Path::new("/nonexistent/berth.dump"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pg_restore"), "{err}");
}
