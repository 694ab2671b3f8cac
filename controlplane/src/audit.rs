//! The tamper-evident audit log: every mutating API call and every exec becomes a
//! record that carries the SHA-256 of the one before it; the head (newest seq and
//! hash) is kept apart, so editing, deleting or reordering any record — the last one
//! included — breaks verification at that record. Secrets never go in: the detail is
//! what was asked (a command line, a path), never a body, key or token.
//!
//! A record is never lost without a trace. The API answers a call before its record
//! is committed (`submit`); when the store refuses a group (a full disk), the records
//! of calls already answered are kept in memory and committed, in order, before any
//! later one, retried every [`RETRY`]. While any are kept, the log is *behind*:
//! [`AuditLog::writable`] refuses, so the API refuses every mutating call up front
//! (507 on a full disk, else 503) instead of doing what it could not record, and
//! [`AuditLog::verify`] reports the chain as not intact, naming how many records are
//! missing. Once the store takes them the log catches up with no restart. Only a
//! process that stops while behind loses them, and says so in its log and in
//! [`AuditLog::close`]. A caller of [`AuditLog::record`], who waits, is told of a
//! failed commit instead and its record is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::store::{AuditHead, AuditRow, Store, StoreError};

/// What happened, as the edge saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub actor: String,
    pub operation: String,
    pub worker_id: String,
    pub sandbox_id: String,
    pub detail: String,
    pub outcome: String,
    pub request_id: String,
    /// The team and user the caller acted for (empty: none, a system record).
    pub team_id: String,
    pub user_id: String,
}

/// Where verification found the chain broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BrokenRecord {
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub ok: bool,
    /// Records checked before the first break (all of them when ok).
    pub records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub first_broken: Option<BrokenRecord>,
}

/// Why a record could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store refused the group the record was committed with.
    #[error("audit log: {0}")]
    Append(Arc<StoreError>),
    /// Reading the log back failed.
    #[error(transparent)]
    Read(#[from] StoreError),
    /// The appender task is gone (the control plane is shutting down).
    #[error("audit log: the appender has stopped")]
    Stopped,
    /// Records of calls already answered could not be committed yet; they are kept
    /// and retried, and until they are committed nothing new may be done.
    #[error("audit log: {records} records of answered calls are not committed yet: {cause}")]
    Behind {
        records: usize,
        cause: Arc<StoreError>,
    },
}

/// The records of answered calls the appender keeps because the store refused them,
/// as the API and verification see it.
#[derive(Debug, Default)]
struct Backlog {
    records: usize,
    cause: Option<Arc<StoreError>>,
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    /// Records of this process go to one appender task, which commits everything
    /// queued while its previous commit ran as one group: one transaction moves the
    /// head once for the whole group. Every caller still waits until its own record is
    /// committed.
    queue: mpsc::Sender<Queued>,
    /// The appender task, awaited by [`AuditLog::close`].
    appender: TaskTracker,
    /// What the appender could not commit yet (see the module's page).
    backlog: Arc<Mutex<Backlog>>,
}

/// What the appender is handed.
#[derive(Debug)]
enum Queued {
    /// A record, with the time it was made and, when the caller waits for it, where to
    /// say how its commit went.
    Record {
        entry: Box<AuditEntry>,
        at_ms: i64,
        done: Option<oneshot::Sender<Result<i64, AuditError>>>,
    },
    /// Answered once everything queued before it is committed (or failed).
    Flush(oneshot::Sender<()>),
    /// Commit what is queued, then stop: the process is shutting down.
    Stop,
}

const PAGE: i64 = 1000;
const DETAIL_LIMIT: usize = 2000;
/// Records waiting for the appender before `record` waits for room.
const QUEUE: usize = 4096;
/// Records committed together at most.
const GROUP: usize = 512;
/// How often the appender tries again to commit the records the store refused.
const RETRY: Duration = Duration::from_secs(1);

impl AuditLog {
    /// The log of `store`; starts its appender task on the current runtime.
    pub fn new(store: Store) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        let appender = TaskTracker::new();
        let backlog = Arc::new(Mutex::new(Backlog::default()));
        appender.spawn(append_groups(store.clone(), queued, backlog.clone()));
        appender.close();
        Self {
            store,
            queue,
            appender,
            backlog,
        }
    }

    /// Whether a call that will be recorded may go ahead: refused with
    /// [`AuditError::Behind`] while records of answered calls wait to be committed.
    pub fn writable(&self) -> Result<(), AuditError> {
        let backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        match &backlog.cause {
            Some(cause) if backlog.records > 0 => Err(AuditError::Behind {
                records: backlog.records,
                cause: cause.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Commits everything queued so far and stops the appender (once every caller is
    /// gone: the servers have stopped). Records offered later are refused with
    /// [`AuditError::Stopped`]; records of answered calls the store still refused are
    /// lost, and the answer says how many ([`AuditError::Behind`]).
    pub async fn close(&self) -> Result<(), AuditError> {
        let flushed = self.flush().await;
        // the appender may be gone already (another handle closed it)
        let _ = self.queue.send(Queued::Stop).await;
        self.appender.wait().await;
        flushed?;
        self.writable()
    }

    /// Appends a record and returns its sequence number once it is committed.
    pub async fn record(&self, entry: AuditEntry) -> Result<i64, AuditError> {
        let (done, committed) = oneshot::channel();
        self.enqueue(entry, Some(done)).await?;
        committed.await.map_err(|_| AuditError::Stopped)?
    }

    /// Queues a record for the appender without waiting for its commit: what the API
    /// does after a call has been answered, so the caller does not wait for the log.
    /// It waits only when the queue is full. A record the store refuses is kept and
    /// retried, and the log is behind until it is committed (see the module's page);
    /// [`AuditLog::list`] and [`AuditLog::verify`] first wait for every record queued
    /// before them.
    pub async fn submit(&self, entry: AuditEntry) -> Result<(), AuditError> {
        self.enqueue(entry, None).await
    }

    async fn enqueue(
        &self,
        mut entry: AuditEntry,
        done: Option<oneshot::Sender<Result<i64, AuditError>>>,
    ) -> Result<(), AuditError> {
        if entry.detail.len() > DETAIL_LIMIT {
            let mut cut = DETAIL_LIMIT;
            while !entry.detail.is_char_boundary(cut) {
                cut -= 1;
            }
            entry.detail.truncate(cut);
            entry.detail.push('…');
        }
        let record = Queued::Record {
            entry: Box::new(entry),
            at_ms: now_ms(),
            done,
        };
        self.queue
            .send(record)
            .await
            .map_err(|_| AuditError::Stopped)
    }

    /// Waits until every record queued before this call is committed (or failed).
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, flushed) = oneshot::channel();
        self.queue
            .send(Queued::Flush(done))
            .await
            .map_err(|_| AuditError::Stopped)?;
        flushed.await.map_err(|_| AuditError::Stopped)
    }

    pub async fn list(&self, since_ms: i64, limit: i64) -> Result<Vec<AuditRow>, AuditError> {
        self.flush().await?;
        Ok(self.store.list_audit(since_ms, limit).await?)
    }

    /// Walks the whole chain and reports the first record that does not hold; a chain
    /// that holds is still not intact while records of answered calls wait to be
    /// committed after it.
    pub async fn verify(&self) -> Result<Verification, AuditError> {
        self.flush().await?;
        let verification = self.verify_committed().await?;
        match self.writable() {
            Err(AuditError::Behind { records, cause }) if verification.ok => {
                let last_seq = i64::try_from(verification.records).unwrap_or(i64::MAX);
                let reason = format!(
                    "{records} records of calls already answered are not committed yet \
                     (the store refused them: {cause}); they are retried"
                );
                Ok(broken(last_seq, last_seq + 1, reason))
            }
            _ => Ok(verification),
        }
    }

    /// [`AuditLog::verify`] of what the store holds.
    async fn verify_committed(&self) -> Result<Verification, AuditError> {
        let AuditHead {
            seq: head_seq,
            hash: head_hash,
        } = self.store.audit_head().await?;
        let mut expected_seq = 1;
        let mut prev_hash = String::new();
        loop {
            let page = self.store.audit_page(expected_seq - 1, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for row in page {
                if let Some(reason) = check(&row, expected_seq, &prev_hash) {
                    return Ok(broken(expected_seq - 1, expected_seq.min(row.seq), reason));
                }
                prev_hash = row.hash;
                expected_seq += 1;
            }
        }
        let last_seq = expected_seq - 1;
        if head_seq != last_seq || head_hash != prev_hash {
            let reason = if head_seq > last_seq {
                format!("records {} to {head_seq} were deleted", last_seq + 1)
            } else {
                "the chain does not end where the head says".to_owned()
            };
            return Ok(broken(last_seq, last_seq + 1, reason));
        }
        Ok(Verification {
            ok: true,
            records: u64::try_from(last_seq).unwrap_or(0),
            first_broken: None,
        })
    }
}

/// The appender: takes whatever is queued (up to [`GROUP`] messages), commits its
/// records as one group, answers those who wait, and goes on until it is told to stop
/// or every `AuditLog` handle is dropped. Records of answered calls the store refused
/// are kept in `retained` and go first into the next group, tried at least every
/// [`RETRY`]; `backlog` tells the handles how many there are.
async fn append_groups(
    store: Store,
    mut queued: mpsc::Receiver<Queued>,
    backlog: Arc<Mutex<Backlog>>,
) {
    // the head this task wrote last, so the next group need not read it back; another
    // writer (a replica) moving it makes that append fail, and the head is read again
    let mut head = None;
    let mut taken = Vec::with_capacity(GROUP);
    let mut retained: Vec<(AuditEntry, i64)> = Vec::new();
    let mut stop = false;
    while !stop {
        if retained.is_empty() {
            if queued.recv_many(&mut taken, GROUP).await == 0 {
                break;
            }
        } else {
            // recv_many is cancel safe: a timeout loses no message
            let received = tokio::time::timeout(RETRY, queued.recv_many(&mut taken, GROUP)).await;
            // every handle is gone: one last try below
            stop = received == Ok(0);
        }
        let mut group = std::mem::take(&mut retained);
        let mut waiting: Vec<_> = group.iter().map(|_| None).collect();
        let mut flushes = Vec::new();
        for message in taken.drain(..) {
            match message {
                Queued::Record { entry, at_ms, done } => {
                    waiting.push(done);
                    group.push((*entry, at_ms));
                }
                Queued::Flush(done) => flushes.push(done),
                Queued::Stop => stop = true,
            }
        }
        if !group.is_empty() {
            let appended = append_group(&store, &mut head, &group).await;
            if let Err(err) = &appended {
                tracing::error!(error = %err, records = group.len(), "cannot append to the audit log");
            }
            for ((offset, done), record) in (0..).zip(waiting).zip(group) {
                let answer = match &appended {
                    Ok(first_seq) => Ok(first_seq + offset),
                    Err(err) => Err(AuditError::Append(err.clone())),
                };
                match done {
                    // a caller that went away does not stop the others
                    Some(done) => {
                        let _ = done.send(answer);
                    }
                    // the call was answered already: its record must not be dropped
                    None if answer.is_err() => retained.push(record),
                    None => {}
                }
            }
            let mut backlog = backlog.lock().unwrap_or_else(|e| e.into_inner());
            backlog.records = retained.len();
            backlog.cause = appended.err();
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
    if !retained.is_empty() {
        tracing::error!(
            records = retained.len(),
            "the audit log stops with records of answered calls it could not commit; they are lost"
        );
    }
}

/// Chains `group` onto the head and commits it; returns the first record's sequence
/// number. When another writer moved the head meanwhile, the group is chained onto
/// the new head and committed again.
async fn append_group(
    store: &Store,
    head: &mut Option<(i64, String)>,
    group: &[(AuditEntry, i64)],
) -> Result<i64, Arc<StoreError>> {
    loop {
        let (mut seq, mut prev_hash) = match head.take() {
            Some(known) => known,
            None => {
                let head = store.audit_head().await.map_err(Arc::new)?;
                (head.seq, head.hash)
            }
        };
        let first_seq = seq + 1;
        let rows: Vec<AuditRow> = group
            .iter()
            .map(|(entry, at_ms)| {
                seq += 1;
                let row = chained(entry, *at_ms, seq, &prev_hash);
                prev_hash.clone_from(&row.hash);
                row
            })
            .collect();
        if store.append_audit(&rows).await.map_err(Arc::new)? {
            *head = Some((seq, prev_hash));
            return Ok(first_seq);
        }
    }
}

/// `entry` as record `seq`, following the record whose hash is `prev_hash`.
fn chained(entry: &AuditEntry, at_ms: i64, seq: i64, prev_hash: &str) -> AuditRow {
    let mut row = AuditRow {
        seq,
        at_ms,
        actor: entry.actor.clone(),
        operation: entry.operation.clone(),
        worker_id: entry.worker_id.clone(),
        sandbox_id: entry.sandbox_id.clone(),
        detail: entry.detail.clone(),
        outcome: entry.outcome.clone(),
        request_id: entry.request_id.clone(),
        team_id: entry.team_id.clone(),
        user_id: entry.user_id.clone(),
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    };
    row.hash = record_hash(&row);
    row
}

fn broken(checked: i64, seq: i64, reason: String) -> Verification {
    Verification {
        ok: false,
        records: u64::try_from(checked).unwrap_or(0),
        first_broken: Some(BrokenRecord { seq, reason }),
    }
}

/// Why `row` does not continue the chain, if it does not.
fn check(row: &AuditRow, expected_seq: i64, prev_hash: &str) -> Option<String> {
    if row.seq != expected_seq {
        return Some(format!(
            "record {expected_seq} is missing (the next one is {})",
            row.seq
        ));
    }
    if row.prev_hash != prev_hash {
        return Some("it does not point at the record before it".to_owned());
    }
    if record_hash(row) != row.hash {
        return Some("its contents do not match its hash (edited)".to_owned());
    }
    None
}

/// SHA-256 over the record's fields (as a JSON array, so no separator is ambiguous)
/// and the previous hash. Team and user join the array only when one is set, so
/// records written before teams existed keep their hashes.
pub fn record_hash(row: &AuditRow) -> String {
    let mut canonical = serde_json::json!([
        row.seq,
        row.at_ms,
        row.actor,
        row.operation,
        row.worker_id,
        row.sandbox_id,
        row.detail,
        row.outcome,
        row.request_id,
        row.prev_hash,
    ]);
    if (!row.team_id.is_empty() || !row.user_id.is_empty())
        && let Some(fields) = canonical.as_array_mut()
    {
        fields.push(row.team_id.clone().into());
        fields.push(row.user_id.clone().into());
    }
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{raw_pool, temp_store};

    async fn log_with(records: usize) -> (tempfile::TempDir, Store, AuditLog) {
        let (dir, store) = temp_store().await;
        let log = AuditLog::new(store.clone());
        for i in 0..records {
            log.record(AuditEntry {
                actor: "key:k1".into(),
                operation: "POST /api/v1/sandboxes/{id}/exec".into(),
                sandbox_id: format!("sbx-{i}"),
                detail: format!("echo {i}"),
                outcome: "ok".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        (dir, store, log)
    }

    #[tokio::test]
    async fn an_untouched_chain_verifies() {
        let (_dir, _store, log) = log_with(5).await;
        let verification = log.verify().await.unwrap();
        assert!(verification.ok, "{verification:?}");
        assert_eq!(verification.records, 5);
        let (_dir, _store, empty) = log_with(0).await;
        assert!(empty.verify().await.unwrap().ok);
    }

    #[tokio::test]
    async fn an_edited_record_breaks_verification_at_that_record() {
        let (_dir, store, log) = log_with(5).await;
        sqlx::query("UPDATE audit_events SET detail = 'echo innocent' WHERE seq = 3")
            .execute(&raw_pool(&store).await)
            .await
            .unwrap();
        let verification = log.verify().await.unwrap();
        assert!(!verification.ok);
        let broken = verification.first_broken.unwrap();
        assert_eq!(broken.seq, 3);
        assert!(broken.reason.contains("edited"), "{broken:?}");
        assert_eq!(verification.records, 2);
    }

    #[tokio::test]
    async fn a_rehashed_edit_is_caught_by_the_next_record() {
        let (_dir, store, log) = log_with(5).await;
        let mut row = store.audit_page(2, 1).await.unwrap().remove(0);
        row.detail = "echo innocent".into();
        row.hash = record_hash(&row);
        sqlx::query("UPDATE audit_events SET detail = $1, hash = $2 WHERE seq = 3")
            .bind(&row.detail)
            .bind(&row.hash)
            .execute(&raw_pool(&store).await)
            .await
            .unwrap();
        let broken = log.verify().await.unwrap().first_broken.unwrap();
        assert_eq!(broken.seq, 4);
    }

    #[tokio::test]
    async fn deleted_records_break_verification() {
        let (_dir, store, log) = log_with(5).await;
        sqlx::query("DELETE FROM audit_events WHERE seq = 2")
            .execute(&raw_pool(&store).await)
            .await
            .unwrap();
        let broken = log.verify().await.unwrap().first_broken.unwrap();
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("missing"), "{broken:?}");

        let (_dir, store, log) = log_with(5).await;
        sqlx::query("DELETE FROM audit_events WHERE seq = 5")
            .execute(&raw_pool(&store).await)
            .await
            .unwrap();
        let broken = log.verify().await.unwrap().first_broken.unwrap();
        assert_eq!(broken.seq, 5);
        assert!(broken.reason.contains("deleted"), "{broken:?}");
    }

    #[tokio::test]
    async fn concurrent_appends_keep_one_chain() {
        let (_dir, _store, log) = log_with(0).await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.record(AuditEntry {
                    actor: "system".into(),
                    operation: format!("op {i}"),
                    outcome: "ok".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        assert!(log.verify().await.unwrap().ok);
    }

    #[tokio::test]
    async fn two_writers_on_one_store_keep_one_chain() {
        // like two replicas: each remembers the head it wrote, which the other moves
        let (_dir, store, first) = log_with(2).await;
        let second = AuditLog::new(store.clone());
        let entry = |n: usize| AuditEntry {
            actor: "system".into(),
            operation: format!("op {n}"),
            outcome: "ok".into(),
            ..Default::default()
        };
        let mut seqs = Vec::new();
        for n in 0..6 {
            let log = if n % 2 == 0 { &second } else { &first };
            seqs.push(log.record(entry(n)).await.unwrap());
        }
        assert_eq!(seqs, vec![3, 4, 5, 6, 7, 8]);
        let verification = first.verify().await.unwrap();
        assert!(verification.ok, "{verification:?}");
        assert_eq!(verification.records, 8);
    }

    #[tokio::test]
    async fn a_failed_commit_reaches_the_caller_and_the_next_one_succeeds() {
        let (_dir, store, log) = log_with(1).await;
        let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
        sqlx::query(&rename("audit_events", "audit_events_away"))
            .execute(&raw_pool(&store).await)
            .await
            .unwrap();
        let err = log.record(AuditEntry::default()).await.unwrap_err();
        assert!(matches!(err, AuditError::Append(_)), "{err:?}");
        sqlx::query(&rename("audit_events_away", "audit_events"))
            .execute(&raw_pool(&store).await)
            .await
            .unwrap();
        // the failed group moved nothing: the next record follows record 1
        assert_eq!(log.record(AuditEntry::default()).await.unwrap(), 2);
    }

    fn answered(n: usize) -> AuditEntry {
        AuditEntry {
            actor: "key:k1".into(),
            operation: "POST /api/v1/sandboxes/{id}/exec".into(),
            detail: format!("{n} {}", "x".repeat(DETAIL_LIMIT - 8)),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    /// Submits records of answered calls until the store (capped at its size) refuses
    /// one; how many were submitted.
    async fn submit_until_behind(log: &AuditLog) -> usize {
        for n in 1..=1000 {
            log.submit(answered(n)).await.unwrap();
            log.flush().await.unwrap();
            if log.writable().is_err() {
                return n;
            }
        }
        panic!("the page limit is never reached");
    }

    /// A full disk used to drop the records of a failed group: verification then said
    /// "intact" over a chain that silently lacked them.
    #[tokio::test]
    async fn records_refused_for_space_are_kept_and_committed_once_space_returns() {
        let (_dir, store, log) = log_with(2).await;
        let pages = store.sqlite_page_count().await.unwrap().unwrap();
        store.limit_sqlite_pages(pages).await.unwrap();
        let submitted = submit_until_behind(&log).await;

        let err = log.writable().unwrap_err();
        let AuditError::Behind { records, cause } = &err else {
            panic!("{err:?}");
        };
        assert!(*records >= 1, "{err}");
        assert!(matches!(**cause, StoreError::DiskFull(_)), "{cause:?}");
        let verification = log.verify().await.unwrap();
        assert!(!verification.ok, "{verification:?}");
        let broken = verification.first_broken.unwrap();
        assert!(
            broken.reason.contains("not committed yet") && broken.reason.contains("disk space"),
            "{broken:?}"
        );
        assert_eq!(
            broken.seq,
            i64::try_from(verification.records).unwrap() + 1,
            "the chain breaks right after what is committed"
        );

        // space comes back: the kept records are committed, in order, before new ones
        store.limit_sqlite_pages(1 << 30).await.unwrap();
        let next = log.record(answered(0)).await.unwrap();
        assert_eq!(next, i64::try_from(2 + submitted + 1).unwrap());
        log.writable().unwrap();
        let verification = log.verify().await.unwrap();
        assert!(verification.ok, "{verification:?}");
        assert_eq!(verification.records, u64::try_from(next).unwrap());
        let details: Vec<String> = store
            .audit_page(2, 2000)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.detail.split(' ').next().unwrap().to_owned())
            .collect();
        let mut expected: Vec<String> = (1..=submitted).map(|n| n.to_string()).collect();
        expected.push("0".into());
        assert_eq!(details, expected);
    }

    #[tokio::test]
    async fn closing_while_behind_says_records_are_lost() {
        let (_dir, store, log) = log_with(1).await;
        let pages = store.sqlite_page_count().await.unwrap().unwrap();
        store.limit_sqlite_pages(pages).await.unwrap();
        submit_until_behind(&log).await;
        let err = log.close().await.unwrap_err();
        assert!(matches!(err, AuditError::Behind { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn long_details_are_cut() {
        let (_dir, store, log) = log_with(0).await;
        log.record(AuditEntry {
            detail: "é".repeat(3000),
            ..Default::default()
        })
        .await
        .unwrap();
        let row = store.audit_page(0, 1).await.unwrap().remove(0);
        assert!(row.detail.len() <= DETAIL_LIMIT + 3);
        assert!(log.verify().await.unwrap().ok);
    }
}
