//! The macros that run a shared statement on whichever backend the store holds (the
//! store's page, `store.rs`, says when to use them and when to dispatch by hand).
//! Each expands its body once per backend, so the body is written once and compiled
//! against each driver's own executor types.

use std::future::Future;

use super::StoreError;

/// Runs `$body` with `$pool` bound to a concrete executor for reads (a
/// `&mut SqliteConnection` of a reader, or `&PgPool`): the body is written once and
/// compiled for each backend, and uses `$pool` for one statement. On SQLite the
/// readers are read-only, so a statement that writes must use [`with_write_pool!`]
/// or [`in_write_tx!`] (or fail loudly in every test).
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite(connections) => {
                let mut held = connections.reader().await;
                let $pool = held.connection()?;
                $body
            }
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Like [`with_pool!`] for a single autocommit statement that writes: on SQLite it runs
/// on the one writer connection.
macro_rules! with_write_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite(connections) => {
                let mut held = connections.writer().await;
                let $pool = held.connection()?;
                $body
            }
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in a write transaction bound to `$tx`. The body commits; returning
/// early (or with an error) rolls back. SQLite takes its write lock up front
/// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes waits for other
/// writers instead of failing with "database is locked". On Postgres see
/// [`postgres_write_tx!`].
macro_rules! in_write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        match &$store.pool {
            $crate::store::Pool::Sqlite(connections) => {
                $crate::store::dispatch::transaction(async {
                    let mut held = connections.writer().await;
                    #[allow(unused_mut)]
                    let mut $tx =
                        sqlx::Connection::begin_with(held.connection()?, "BEGIN IMMEDIATE").await?;
                    $body
                })
                .await
            }
            $crate::store::Pool::Postgres(pool) => postgres_write_tx!(pool, |$tx| $body),
        }
    }};
}

/// Runs `$body` in a write transaction on Postgres pool `$pool`, bound to `$tx`; the
/// body commits. A transaction chosen as a deadlock victim (or failing serialization)
/// is run again from the start, a few times; its effects were rolled back, so nothing
/// happens twice.
macro_rules! postgres_write_tx {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 1u32;
        loop {
            let result = $crate::store::dispatch::transaction(async {
                #[allow(unused_mut)]
                let mut $tx = $pool.begin().await?;
                $body
            })
            .await;
            match result {
                Err(err)
                    if attempt < $crate::store::postgres::TX_ATTEMPTS
                        && $crate::store::postgres::is_transient(&err) =>
                {
                    tracing::debug!(attempt, error = %err, "transaction conflicted; running it again");
                    $crate::store::postgres::conflict_backoff(attempt).await;
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

/// Pins a transaction body's result type, so `?` inside it converts to `StoreError`.
pub(super) async fn transaction<T>(
    body: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    body.await
}
