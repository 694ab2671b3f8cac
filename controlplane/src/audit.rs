//! The tamper-evident audit log: every mutating API call and every exec becomes a
//! record that carries the SHA-256 of the one before it; the head (newest seq and
//! hash) is kept apart, so editing, deleting or reordering any record — the last one
//! included — breaks verification at that record. Secrets never go in: the detail is
//! what was asked (a command line, a path), never a body, key or token.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::store::{AuditRow, Store, StoreError};

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
}

/// Where verification found the chain broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenRecord {
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Records checked before the first break (all of them when ok).
    pub records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenRecord>,
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    /// Appends from this process queue here instead of racing for the head. It holds
    /// the head this process last wrote, so the next append need not read it back;
    /// another writer (a replica) moving the head makes that append fail, after which
    /// the head is read from the store.
    append: Arc<tokio::sync::Mutex<Option<(i64, String)>>>,
}

const PAGE: i64 = 1000;
const DETAIL_LIMIT: usize = 2000;

impl AuditLog {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            append: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Appends a record; retries when another writer moved the head meanwhile.
    pub async fn record(&self, mut entry: AuditEntry) -> Result<i64, StoreError> {
        if entry.detail.len() > DETAIL_LIMIT {
            let mut cut = DETAIL_LIMIT;
            while !entry.detail.is_char_boundary(cut) {
                cut -= 1;
            }
            entry.detail.truncate(cut);
            entry.detail.push('…');
        }
        let mut known_head = self.append.lock().await;
        loop {
            let (seq, prev_hash) = match known_head.take() {
                Some(head) => head,
                None => self.store.audit_head().await?,
            };
            let mut row = AuditRow {
                seq: seq + 1,
                at_ms: now_ms(),
                actor: entry.actor.clone(),
                operation: entry.operation.clone(),
                worker_id: entry.worker_id.clone(),
                sandbox_id: entry.sandbox_id.clone(),
                detail: entry.detail.clone(),
                outcome: entry.outcome.clone(),
                request_id: entry.request_id.clone(),
                prev_hash,
                hash: String::new(),
            };
            row.hash = record_hash(&row);
            if self.store.append_audit(&row).await? {
                *known_head = Some((row.seq, row.hash));
                return Ok(row.seq);
            }
        }
    }

    pub async fn list(&self, since_ms: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        self.store.list_audit(since_ms, limit).await
    }

    /// Walks the whole chain and reports the first record that does not hold.
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        let (head_seq, head_hash) = self.store.audit_head().await?;
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
/// and the previous hash.
pub fn record_hash(row: &AuditRow) -> String {
    let canonical = serde_json::json!([
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
            .execute(raw_pool(&store))
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
            .execute(raw_pool(&store))
            .await
            .unwrap();
        let broken = log.verify().await.unwrap().first_broken.unwrap();
        assert_eq!(broken.seq, 4);
    }

    #[tokio::test]
    async fn deleted_records_break_verification() {
        let (_dir, store, log) = log_with(5).await;
        sqlx::query("DELETE FROM audit_events WHERE seq = 2")
            .execute(raw_pool(&store))
            .await
            .unwrap();
        let broken = log.verify().await.unwrap().first_broken.unwrap();
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("missing"), "{broken:?}");

        let (_dir, store, log) = log_with(5).await;
        sqlx::query("DELETE FROM audit_events WHERE seq = 5")
            .execute(raw_pool(&store))
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
