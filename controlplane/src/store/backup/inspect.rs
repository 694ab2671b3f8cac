//! Checking a SQLite file before it is called a backup or restored as the store: it
//! is a SQLite database, `PRAGMA integrity_check` finds nothing wrong, its migration
//! history is Berth's own (no migration this binary does not know, checksums equal)
//! and not newer than this binary, and what it holds, counted.

use std::path::Path;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::BackupError;
use crate::store::sqlite::MIGRATIONS;

/// What a store file holds, as counted when it was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreContents {
    /// The newest migration applied to it.
    pub schema_version: i64,
    pub workers: i64,
    pub sandboxes: i64,
    pub api_keys: i64,
    pub audit_records: i64,
}

/// How many lines of `integrity_check` an error quotes.
const QUOTED_PROBLEMS: usize = 3;

/// Checks the SQLite file at `path` (see the module docs) and counts what it holds.
pub async fn verify_sqlite_file(path: &Path) -> Result<StoreContents, BackupError> {
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .map_err(|err| classify(path, err))?;
    let checked = check(path, &mut connection).await;
    let _ = connection.close().await;
    checked
}

async fn check(
    path: &Path,
    connection: &mut SqliteConnection,
) -> Result<StoreContents, BackupError> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *connection)
        .await
        .map_err(|err| classify(path, err))?;
    if problems.len() != 1 || problems[0] != "ok" {
        let mut detail = problems
            .iter()
            .take(QUOTED_PROBLEMS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if problems.len() > QUOTED_PROBLEMS {
            detail.push_str(&format!(" (and {} more)", problems.len() - QUOTED_PROBLEMS));
        }
        return Err(BackupError::Corrupt {
            path: path.to_owned(),
            detail: format!("integrity_check: {detail}"),
        });
    }
    let schema_version = check_migrations(path, connection).await?;
    let (workers, sandboxes, api_keys, audit_records) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM workers), (SELECT count(*) FROM sandboxes), \
         (SELECT count(*) FROM api_keys), (SELECT count(*) FROM audit_events)",
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(|err| not_berth(path, format!("its tables are not berth's: {err}")))?;
    Ok(StoreContents {
        schema_version,
        workers,
        sandboxes,
        api_keys,
        audit_records,
    })
}

/// The file's schema version, once every applied migration is one of this binary's.
async fn check_migrations(
    path: &Path,
    connection: &mut SqliteConnection,
) -> Result<i64, BackupError> {
    let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success = 1 ORDER BY version",
    )
    .fetch_all(&mut *connection)
    .await
    .map_err(|err| not_berth(path, format!("it has no migration history ({err})")))?;
    let supported = MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    let Some(&(newest, _)) = applied.last() else {
        return Err(not_berth(
            path,
            "no migration was ever applied to it".into(),
        ));
    };
    if newest > supported {
        return Err(BackupError::TooNew {
            path: path.to_owned(),
            found: newest,
            supported,
        });
    }
    for (version, checksum) in &applied {
        let Some(ours) = MIGRATIONS
            .iter()
            .find(|migration| migration.version == *version)
        else {
            return Err(not_berth(
                path,
                format!("migration {version} is not one of berth's"),
            ));
        };
        if ours.checksum.as_ref() != checksum.as_slice() {
            return Err(not_berth(
                path,
                format!("migration {version} differs from berth's"),
            ));
        }
    }
    Ok(newest)
}

fn not_berth(path: &Path, reason: String) -> BackupError {
    BackupError::NotBerth {
        path: path.to_owned(),
        reason,
    }
}

/// SQLite's "not a database" and "malformed" told apart from other failures.
fn classify(path: &Path, err: sqlx::Error) -> BackupError {
    const SQLITE_CORRUPT: i64 = 11;
    const SQLITE_NOTADB: i64 = 26;
    let code = match &err {
        sqlx::Error::Database(db) => db.code().and_then(|code| code.parse::<i64>().ok()),
        _ => None,
    };
    match code.map(|code| code & 0xff) {
        Some(SQLITE_NOTADB) => BackupError::NotSqlite {
            path: path.to_owned(),
            source: err,
        },
        Some(SQLITE_CORRUPT) => BackupError::Corrupt {
            path: path.to_owned(),
            detail: err.to_string(),
        },
        _ => BackupError::Database {
            path: path.to_owned(),
            source: err,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn a_fresh_store_passes_and_other_files_do_not() {
        let (dir, store) = temp_store().await;
        store.close().await;
        let contents = verify_sqlite_file(&dir.path().join("berth.db"))
            .await
            .unwrap();
        assert_eq!(contents.workers, 0);
        assert_eq!(
            contents.schema_version,
            MIGRATIONS.iter().map(|m| m.version).max().unwrap()
        );

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database, just some words\n".repeat(100)).unwrap();
        let err = verify_sqlite_file(&text).await.unwrap_err();
        assert!(matches!(err, BackupError::NotSqlite { .. }), "{err}");

        let other = dir.path().join("other.db");
        let mut connection = SqliteConnectOptions::new()
            .filename(&other)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)")
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
        let err = verify_sqlite_file(&other).await.unwrap_err();
        assert!(matches!(err, BackupError::NotBerth { .. }), "{err}");
    }
}
