//! The store's share of section 2: the writes one spawn+destroy pair makes in the
//! control plane's store (placement with slot and lease, mark running, destroy claim,
//! release, two audit records), made straight on a SQLite store in this process
//! without HTTP, gRPC or a worker. What this sustains bounds what the whole path can
//! reach, since SQLite lets one writer in at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use berth_controlplane::audit::{AuditEntry, AuditLog};
use berth_controlplane::store::{
    Enrollment, EnrollmentCredential, HeartbeatUpdate, NewCertificate, NewJoinToken, NewSandbox,
    ReportedState, SandboxState, Store,
};

use crate::latency::ms;
use crate::load::{Window, closed_loop};
use crate::report::Table;

const WORKER: &str = "floor-worker";

/// A fresh SQLite store in `dir` with one worker that has room for everything.
async fn open(dir: &std::path::Path) -> anyhow::Result<Store> {
    let store = Store::open_sqlite_file(&dir.join("store-floor.db"))
        .await
        .context("open the store-floor database")?;
    store
        .insert_join_token(&NewJoinToken {
            jti: "floor".into(),
            worker_id: None,
            max_uses: 1,
            created_at: 0,
            expires_at: i64::MAX,
            created_by: "bench".into(),
            pool: "default".into(),
            labels: "{}".into(),
        })
        .await?;
    store
        .enroll_worker(&Enrollment {
            worker_id: WORKER.into(),
            spiffe_id: format!("spiffe://berth.local/worker/{WORKER}"),
            credential: EnrollmentCredential::JoinToken {
                jti: "floor".into(),
                pinned: false,
            },
            hostname: "bench".into(),
            advertise_addr: "127.0.0.1:1".into(),
            providers: "[]".into(),
            max_sandboxes: i64::MAX / 2,
            // not counted: the floor measures the store's writes, not placement
            vcpus: 0,
            memory_mb: 0,
            version: "bench".into(),
            new_worker_token_jti: "floor-wt".into(),
            certificate: NewCertificate {
                serial: "floor-serial".into(),
                worker_id: WORKER.into(),
                issued_at: 0,
                expires_at: i64::MAX,
                reason: "enroll",
            },
            now: 0,
        })
        .await?;
    store
        .record_heartbeat(&HeartbeatUpdate {
            worker_id: WORKER.into(),
            reported_state: ReportedState::Ready,
            hostname: "bench".into(),
            advertise_addr: "127.0.0.1:1".into(),
            providers: "[]".into(),
            max_sandboxes: i64::MAX / 2,
            // not counted: the floor measures the store's writes, not placement
            vcpus: 0,
            memory_mb: 0,
            version: "bench".into(),
            reported_sandboxes: 0,
            // far ahead, so the freshness check of placement always passes
            now_ms: i64::MAX / 2,
        })
        .await?;
    Ok(store)
}

/// One pair's store writes, in the order the control plane makes them.
async fn pair(store: &Store, audit: &AuditLog, id: String) -> anyhow::Result<()> {
    let sandbox = NewSandbox {
        id: id.clone(),
        provider: "mock".into(),
        image: "bench".into(),
        memory_mb: 512,
        vcpus: 1,
        owner_id: String::new(),
        template: String::new(),
        metadata: "{}".into(),
        created_at: 0,
        expires_at: 600,
        internet: true,
        team_id: "default".into(),
        workdir: String::new(),
        shell: String::new(),
        ports: "[]".into(),
        auto_stop_secs: 0,
    };
    let placed = store
        .create_placed_sandbox(&sandbox, &[WORKER.to_owned()], 0, i64::MAX / 2, "full")
        .await?;
    anyhow::ensure!(placed.is_some(), "the store placed nothing");
    anyhow::ensure!(
        store.mark_sandbox_running(&id, "vm", 1).await?,
        "not running"
    );
    audit.submit(entry(&id, "POST /api/v1/sandboxes")).await?;
    anyhow::ensure!(store.claim_destroy(&id, 1).await?, "destroy not claimed");
    store
        .finish_sandbox(&id, SandboxState::Destroyed, "", 1)
        .await?;
    audit
        .submit(entry(&id, "DELETE /api/v1/sandboxes/{id}"))
        .await?;
    Ok(())
}

fn entry(sandbox_id: &str, operation: &str) -> AuditEntry {
    AuditEntry {
        actor: "key:bench".into(),
        operation: operation.into(),
        worker_id: WORKER.into(),
        sandbox_id: sandbox_id.into(),
        outcome: "ok".into(),
        ..AuditEntry::default()
    }
}

/// Runs the pairs at each of `concurrency` tasks for `window`; a table row per count.
pub async fn measure(
    dir: &std::path::Path,
    concurrency: &[usize],
    window: Window,
) -> anyhow::Result<(Table, f64)> {
    let store = open(dir).await?;
    let audit = AuditLog::new(store.clone());
    let next = Arc::new(AtomicU64::new(0));
    let mut table = Table::new(&[
        "store alone",
        "tasks",
        "pairs",
        "pairs/s",
        "p50 ms",
        "p99 ms",
        "errors",
    ]);
    let mut best = 0.0f64;
    for &tasks in concurrency {
        let each = vec![(store.clone(), audit.clone(), next.clone()); tasks];
        let result = closed_loop(each, window, |(store, audit, next)| async move {
            let id = format!("floor-{}", next.fetch_add(1, Ordering::Relaxed));
            pair(&store, &audit, id).await
        })
        .await;
        if let Some(err) = &result.first_error {
            anyhow::bail!("store floor at {tasks} tasks: {err}");
        }
        let s = result.summary;
        best = best.max(s.per_second);
        table.row(vec![
            "sqlite".into(),
            tasks.to_string(),
            s.count.to_string(),
            format!("{:.0}", s.per_second),
            ms(s.p50),
            ms(s.p99),
            result.errors.to_string(),
        ]);
    }
    audit.flush().await?;
    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .context("closing the store-floor database")?;
    Ok((table, best))
}
