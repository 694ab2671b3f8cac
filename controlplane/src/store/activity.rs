//! A sandbox's last use, for auto-stop: written at most once per interval (the
//! conditional `UPDATE` skips a write any replica made within it), the running
//! sandboxes idle past their `auto_stop`, and the conditional move to `stopped` that a
//! use written meanwhile prevents.

use super::sandboxes::{ACTIVE_AT, SANDBOX_COLUMNS, SANDBOX_FROM};
use super::{SandboxRow, Store, StoreError};

impl Store {
    /// Notes activity on sandbox `id` at `now` (unix seconds), unless some was noted
    /// within `min_interval_secs` (by any control plane); whether it wrote.
    pub async fn touch_sandbox(
        &self,
        id: &str,
        now: i64,
        min_interval_secs: i64,
    ) -> Result<bool, StoreError> {
        let written = with_write_pool!(self, |pool| {
            sqlx::query("UPDATE sandboxes SET active_at = $2 WHERE id = $1 AND active_at < $3")
                .bind(id)
                .bind(now)
                .bind(now - min_interval_secs)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(written == 1)
    }

    /// Running sandboxes with an auto-stop whose last activity (their `active_at`) is
    /// before `now` minus their auto-stop and `slack_secs` more, with their leases (what
    /// stopping them on their workers needs), by id.
    pub async fn idle_sandboxes(
        &self,
        now: i64,
        slack_secs: i64,
    ) -> Result<Vec<SandboxRow>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT * FROM (SELECT {SANDBOX_COLUMNS}, {ACTIVE_AT} {SANDBOX_FROM} \
                     WHERE s.state = 'running' AND s.auto_stop_secs > 0) idle \
                 WHERE active_at + auto_stop_secs + $2 < $1 ORDER BY id"
            ))
            .bind(now)
            .bind(slack_secs)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// `running → stopped` for an idle sandbox, if it has had no activity after
    /// `active_at` (unix seconds, as [`Self::idle_sandboxes`] read it): a call that
    /// came in since keeps it running. Whether it applied.
    pub async fn stop_idle_sandbox(&self, id: &str, active_at: i64) -> Result<bool, StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sandboxes SET state = 'stopped' \
                 WHERE id = $1 AND state = 'running' AND active_at <= $2",
            )
            .bind(id)
            .bind(active_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }
}
