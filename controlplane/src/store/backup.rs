//! Backing up and restoring the SQLite store (`berth backup FILE`, `berth restore
//! FILE`). Postgres stores are refused with the `pg_dump`/`pg_restore` command to use
//! instead: the database server has its own tools for this, and they are better at it.
//!
//! ## Backup: online and consistent
//!
//! `VACUUM INTO` copies the store inside one read transaction, so the copy is the
//! database as of one commit, however many writers `berth serve` has going; under WAL
//! those writers are not blocked while it runs. The copy is written to a temp file
//! beside FILE, synced, checked (`PRAGMA integrity_check`, Berth's migration history,
//! what it holds) and only then renamed to FILE, so FILE is either absent, the old
//! file, or a whole checked copy. An existing FILE is kept unless the caller forces.
//!
//! ## Restore: only onto a store nobody has open
//!
//! A control plane keeps its store open for its whole life, and in WAL mode SQLite
//! holds a shared lock on the database file for as long as a connection is open (that
//! is how the last one to close knows it may fold the WAL in). So restore asks SQLite
//! for the file's exclusive lock (`locking_mode = EXCLUSIVE`, no busy wait): it is
//! granted only when no connection, in any process, has the store open, and refused
//! otherwise ([`BackupError::InUse`]). Closing that connection also folds whatever
//! the WAL still held into the database file, so the store set aside is whole.
//!
//! Before that, the backup is copied beside the store and checked like a fresh backup
//! (and its schema must not be newer than this binary's migrations); a refused file
//! never gets as far as the store. Once both checks pass, the store moves
//! to `<store>.before-restore-<UTC time>` (a restore is itself reversible), stale
//! `-wal`/`-shm` files go, the checked copy takes the store's name, and it is opened
//! once the way `berth serve` opens it, which brings its schema up to date.
//!
//! The check and the swap are not one atomic step: a `berth serve` started in
//! between would be missed. Restore is an operator's step with the service stopped.

mod inspect;

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteLockingMode};
use sqlx::{ConnectOptions, Connection};

use super::{Backend, Store, StoreError, redact_url};

pub use inspect::{StoreContents, verify_sqlite_file};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "the store is on postgres ({url}); back it up with pg_dump instead: \
         pg_dump --format=custom --file=FILE \"$DATABASE_URL\""
    )]
    PostgresBackup { url: String },
    #[error(
        "the store is on postgres ({url}); restore a pg_dump archive with pg_restore \
         instead, with every berth serve stopped: \
         pg_restore --clean --if-exists --no-owner --dbname=\"$DATABASE_URL\" FILE"
    )]
    PostgresRestore { url: String },
    #[error(transparent)]
    Url(StoreError),
    #[error("database url {0:?} names no SQLite file")]
    NotAFile(String),
    #[error("there is no store at {0}")]
    NoStore(PathBuf),
    #[error("there is no backup file at {0}")]
    NoBackup(PathBuf),
    #[error("{0} exists already (overwrite it with --force)")]
    Exists(PathBuf),
    #[error("path {0} is not UTF-8, which SQLite needs it to be")]
    NonUtf8Path(PathBuf),
    #[error("{path} is not a SQLite database: {source}")]
    NotSqlite { path: PathBuf, source: sqlx::Error },
    #[error("{path} is damaged: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} is not a berth store: {reason}")]
    NotBerth { path: PathBuf, reason: String },
    #[error(
        "{path} has schema version {found}, newer than this berth's ({supported}); \
         restore it with the berth that wrote it"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "a control plane has the store {0} open; stop every berth serve using it, then restore"
    )]
    InUse(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Database { path: PathBuf, source: sqlx::Error },
    #[error("the restored store does not open: {0}")]
    Open(StoreError),
}

/// What `berth backup` wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub contents: StoreContents,
}

/// What `berth restore` did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub store: PathBuf,
    /// Where the store that was replaced now is (none when there was none).
    pub previous: Option<PathBuf>,
    pub contents: StoreContents,
}

/// Writes a consistent copy of the store `database_url` names to `destination`, while
/// control planes may be using it; an existing `destination` is replaced only when
/// `force`.
pub async fn backup(
    database_url: &str,
    destination: &Path,
    force: bool,
) -> Result<BackupReport, BackupError> {
    match Backend::of_url(database_url).map_err(BackupError::Url)? {
        Backend::Sqlite => backup_sqlite(&sqlite_path(database_url)?, destination, force).await,
        Backend::Postgres => Err(BackupError::PostgresBackup {
            url: redact_url(database_url),
        }),
    }
}

/// Replaces the store `database_url` names with the backup at `source`, once it is
/// checked and no control plane has the store open.
pub async fn restore(database_url: &str, source: &Path) -> Result<RestoreReport, BackupError> {
    match Backend::of_url(database_url).map_err(BackupError::Url)? {
        Backend::Sqlite => restore_sqlite(source, &sqlite_path(database_url)?).await,
        Backend::Postgres => Err(BackupError::PostgresRestore {
            url: redact_url(database_url),
        }),
    }
}

/// The file a `sqlite:` url names.
pub fn sqlite_path(database_url: &str) -> Result<PathBuf, BackupError> {
    let options =
        SqliteConnectOptions::from_str(database_url).map_err(|err| BackupError::Url(err.into()))?;
    let path = options.get_filename();
    let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
    if in_memory || path.as_os_str().is_empty() {
        return Err(BackupError::NotAFile(redact_url(database_url)));
    }
    Ok(path.to_owned())
}

/// `VACUUM INTO` a temp file beside `destination`, check it, rename it into place.
pub async fn backup_sqlite(
    store: &Path,
    destination: &Path,
    force: bool,
) -> Result<BackupReport, BackupError> {
    if !store.is_file() {
        return Err(BackupError::NoStore(store.to_owned()));
    }
    if !force && destination.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(destination.to_owned()));
    }
    let staged = staging_path(destination, "backup");
    remove_if_present(&staged)?;
    let contents = match write_checked_copy(store, &staged).await {
        Ok(contents) => contents,
        Err(err) => {
            let _ = fs::remove_file(&staged);
            return Err(err);
        }
    };
    rename(&staged, destination)?;
    sync_dir(destination)?;
    let bytes = fs::metadata(destination)
        .map_err(io_error("read", destination))?
        .len();
    Ok(BackupReport {
        path: destination.to_owned(),
        bytes,
        contents,
    })
}

async fn write_checked_copy(store: &Path, staged: &Path) -> Result<StoreContents, BackupError> {
    let target = staged
        .to_str()
        .ok_or_else(|| BackupError::NonUtf8Path(staged.to_owned()))?;
    let database = database_error(store);
    let mut connection = SqliteConnectOptions::new()
        .filename(store)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(&database)?;
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(&mut connection)
        .await;
    let _ = connection.close().await;
    copied.map_err(&database)?;
    restrict_and_sync(staged)?;
    verify_sqlite_file(staged).await
}

/// Checks the backup, then swaps it in for the store (see the module docs).
pub async fn restore_sqlite(source: &Path, store: &Path) -> Result<RestoreReport, BackupError> {
    if !source.is_file() {
        return Err(BackupError::NoBackup(source.to_owned()));
    }
    let dir = parent_dir(store);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_error("create", &dir))?;
    let staged = staging_path(store, "restore");
    remove_if_present(&staged)?;
    let checked = async {
        let contents = stage_checked_copy(source, &staged).await?;
        if store.exists() {
            ensure_unused(store).await?;
        }
        Ok::<_, BackupError>(contents)
    };
    let contents = match checked.await {
        Ok(contents) => contents,
        Err(err) => {
            let _ = fs::remove_file(&staged);
            return Err(err);
        }
    };
    let previous = set_aside(store)?;
    rename(&staged, store)?;
    sync_dir(store)?;
    let restored = Store::open_sqlite_file(store)
        .await
        .map_err(BackupError::Open)?;
    restored.close().await;
    Ok(RestoreReport {
        store: store.to_owned(),
        previous,
        contents,
    })
}

async fn stage_checked_copy(source: &Path, staged: &Path) -> Result<StoreContents, BackupError> {
    fs::copy(source, staged).map_err(io_error("copy the backup to", staged))?;
    restrict_and_sync(staged)?;
    let contents = verify_sqlite_file(staged).await;
    // a copy of a WAL-mode file may have grown sidecars while it was checked
    remove_sidecars(staged)?;
    contents
}

/// Fails with [`BackupError::InUse`] unless SQLite grants this process the store's
/// exclusive lock; closing the connection that took it folds the WAL into the file.
async fn ensure_unused(store: &Path) -> Result<(), BackupError> {
    let database = database_error(store);
    let mut connection = SqliteConnectOptions::new()
        .filename(store)
        .locking_mode(SqliteLockingMode::Exclusive)
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .map_err(|err| in_use_or(store, err))?;
    let locked = take_exclusive_lock(&mut connection).await;
    let closed = connection.close().await;
    locked.map_err(|err| in_use_or(store, err))?;
    closed.map_err(&database)
}

async fn take_exclusive_lock(connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    // the first read opens the WAL, which in exclusive mode takes the file's lock
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .execute(&mut *connection)
        .await?;
    // and a rollback-journal file takes it here
    sqlx::raw_sql("BEGIN EXCLUSIVE; COMMIT")
        .execute(&mut *connection)
        .await?;
    Ok(())
}

fn in_use_or(store: &Path, err: sqlx::Error) -> BackupError {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    let code = match &err {
        sqlx::Error::Database(db) => db.code().and_then(|code| code.parse::<i64>().ok()),
        _ => None,
    };
    match code.map(|code| code & 0xff) {
        Some(SQLITE_BUSY | SQLITE_LOCKED) => BackupError::InUse(store.to_owned()),
        _ => BackupError::Database {
            path: store.to_owned(),
            source: err,
        },
    }
}

/// Moves the store (and a WAL that was not folded in, should there be one) to
/// `<store>.before-restore-<time>` and removes its shared-memory file; returns where
/// it went.
fn set_aside(store: &Path) -> Result<Option<PathBuf>, BackupError> {
    let wal = sidecar(store, "-wal");
    let shm = sidecar(store, "-shm");
    if !store.exists() {
        remove_if_present(&wal)?;
        remove_if_present(&shm)?;
        return Ok(None);
    }
    let kept = before_restore_path(store);
    rename(store, &kept)?;
    if wal.exists() {
        rename(&wal, &sidecar(&kept, "-wal"))?;
    }
    remove_if_present(&shm)?;
    Ok(Some(kept))
}

/// `<store>.before-restore-20250102T030405Z`, made unique with a counter if a restore
/// in the same second left one.
fn before_restore_path(store: &Path) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let base = format!("{}.before-restore-{stamp}", store.display());
    let mut candidate = PathBuf::from(&base);
    let mut counter = 1;
    while candidate.symlink_metadata().is_ok() {
        candidate = PathBuf::from(format!("{base}-{counter}"));
        counter += 1;
    }
    candidate
}

/// A hidden temp file beside `path`, unique to this process.
fn staging_path(path: &Path, purpose: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "berth.db".to_owned());
    parent_dir(path).join(format!(".{name}.{purpose}-{}.tmp", std::process::id()))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// SQLite's file beside `database` named by `suffix` (`-wal`, `-shm`).
fn sidecar(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_sidecars(database: &Path) -> Result<(), BackupError> {
    remove_if_present(&sidecar(database, "-wal"))?;
    remove_if_present(&sidecar(database, "-shm"))
}

fn remove_if_present(path: &Path) -> Result<(), BackupError> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("remove", path)(err))
        }
        _ => Ok(()),
    }
}

/// Owner-only permissions (the store holds key and token hashes), then fsync.
fn restrict_and_sync(path: &Path) -> Result<(), BackupError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_error("set the permissions of", path))?;
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(io_error("sync", path))
}

fn rename(from: &Path, to: &Path) -> Result<(), BackupError> {
    fs::rename(from, to).map_err(io_error("rename a file to", to))
}

/// Makes a rename into `path`'s directory durable.
fn sync_dir(path: &Path) -> Result<(), BackupError> {
    let dir = parent_dir(path);
    File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", &dir))
}

fn io_error(action: &'static str, path: &Path) -> impl Fn(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::Io {
        action,
        path: path.clone(),
        source,
    }
}

fn database_error(path: &Path) -> impl Fn(sqlx::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::Database {
        path: path.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_urls_name_their_file_and_postgres_is_refused_with_pg_dump() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/berth/berth.db").unwrap(),
            PathBuf::from("/var/lib/berth/berth.db")
        );
        assert!(matches!(
            sqlite_path("sqlite::memory:"),
            Err(BackupError::NotAFile(_))
        ));
        let url = "postgres://berth:s3cret@db/berth";
        let err = backup(url, Path::new("/tmp/x"), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("pg_dump --format=custom"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = restore(url, Path::new("/tmp/x"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("pg_restore"), "{err}");
    }

    #[test]
    fn the_previous_store_gets_a_name_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("berth.db");
        let first = before_restore_path(&store);
        assert!(
            first.to_string_lossy().contains("berth.db.before-restore-"),
            "{}",
            first.display()
        );
        fs::write(&first, b"").unwrap();
        assert_ne!(before_restore_path(&store), first);
        assert_eq!(
            sidecar(&store, "-wal"),
            dir.path().join("berth.db-wal"),
            "SQLite's own name for the WAL"
        );
    }
}
