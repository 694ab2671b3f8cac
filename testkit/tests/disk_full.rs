//! A full data disk, through the real API: SQLite's `max_page_count` on the store's
//! writer stands in for the disk (writes that need a new page fail with
//! `SQLITE_FULL`, "database or disk is full"), and raising it is space coming back.
//! While full, changes are answered 507 with a clear message; once space is back,
//! creates, execs, extends, heartbeats and audit appends work again with no restart,
//! and the audit chain holds a record of every call that was answered, never an
//! "intact" chain that silently lacks some.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use berth_testkit::{Api, TestFleet, eventually, id_of};

/// One mutating call with its own request id: the status, the body, and whether the
/// audit middleware refused it before it ran (such refusals are not recorded).
struct Call {
    request_id: String,
    status: u16,
    body: Value,
}

impl Call {
    fn refused_by_the_audit_log(&self) -> bool {
        self.status == 507
            && self.body["message"]
                .as_str()
                .is_some_and(|message| message.contains("audit log cannot be written"))
    }
}

struct Calls<'a> {
    api: &'a Api,
    made: Vec<Call>,
}

impl Calls<'_> {
    async fn post(&mut self, path: &str, body: Value) -> &Call {
        let request_id = format!("disk-full-{}", self.made.len());
        let (status, body) = self
            .api
            .send(
                self.api
                    .request(reqwest::Method::POST, path)
                    .header("X-Request-ID", &request_id)
                    .json(&body),
            )
            .await;
        self.made.push(Call {
            request_id,
            status,
            body,
        });
        self.made.last().expect("just pushed")
    }
}

/// A command line near the audit log's detail limit, so each exec's record takes
/// room in the store.
fn long_echo(n: usize) -> Value {
    json!({"command": format!("echo {n} {}", "x".repeat(1900))})
}

fn assert_disk_full_answer(call: &Call) {
    assert_eq!(call.status, 507, "{}", call.body);
    assert_eq!(call.body["code"], "INSUFFICIENT_STORAGE", "{}", call.body);
    let message = call.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("out of disk space"), "{message}");
}

/// The worker's last heartbeat, RFC 3339 (which compares as a string), or "".
async fn last_heartbeat(api: &Api, worker_id: &str) -> String {
    let (status, worker) = api.get(&format!("/workers/{worker_id}")).await;
    assert_eq!(status, 200, "{worker}");
    worker["last_heartbeat"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_full_disk_answers_507_and_everything_recovers_without_a_restart() {
    let fleet = TestFleet::start().await;
    let (api, store) = (&fleet.api, fleet.cp.fleet.store());
    let Some(pages) = store.sqlite_page_count().await.unwrap() else {
        println!("SKIPPED a_full_disk_answers_507…: the page limit is SQLite's");
        return;
    };
    let worker_id = fleet.worker(0).worker_id.clone();
    let mut calls = Calls {
        api,
        made: Vec::new(),
    };
    let call = calls.post("/sandboxes", json!({})).await;
    assert_eq!(call.status, 201, "{}", call.body);
    let sandbox = id_of(&call.body);

    // the disk fills up under creates and execs, until the audit log cannot keep up
    store.limit_sqlite_pages(pages).await.unwrap();
    let mut refused = None;
    for n in 0..400 {
        let call = if n % 4 == 0 {
            calls.post("/sandboxes", json!({})).await
        } else {
            calls
                .post(&format!("/sandboxes/{sandbox}/exec"), long_echo(n))
                .await
        };
        assert!(
            matches!(call.status, 200 | 201 | 507),
            "a full disk answers 507, nothing else: {} {}",
            call.status,
            call.body
        );
        if call.status == 507 {
            assert_disk_full_answer(call);
        }
        if call.refused_by_the_audit_log() {
            refused = Some(n);
            break;
        }
    }
    assert!(
        refused.is_some(),
        "no change was refused although the audit log could not commit its records"
    );
    // while full: every change is refused, clearly, and verification says records are
    // missing instead of calling the chain intact
    let call = calls.post("/sandboxes", json!({})).await;
    assert_disk_full_answer(call);
    let call = calls
        .post(
            &format!("/sandboxes/{sandbox}/extend"),
            json!({"ttl": "1h"}),
        )
        .await;
    assert_disk_full_answer(call);
    let (status, verification) = api.get("/audit/verify").await;
    assert_eq!(status, 200, "{verification}");
    assert_eq!(verification["ok"], false, "{verification}");
    let reason = verification["first_broken"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("not committed yet"), "{verification}");

    // space comes back: no restart
    store.limit_sqlite_pages(1 << 30).await.unwrap();
    let created = eventually(
        "a create to succeed once space is back",
        Duration::from_secs(15),
        || async {
            let (status, body) = api.post("/sandboxes", json!({})).await;
            (status == 201).then_some(body)
        },
    )
    .await;
    let call = calls
        .post(
            &format!("/sandboxes/{}/exec", id_of(&created)),
            long_echo(0),
        )
        .await;
    assert_eq!(call.status, 200, "{}", call.body);
    assert_eq!(call.body["stdout"].as_str().map(|s| &s[..2]), Some("0 "));
    let call = calls
        .post(
            &format!("/sandboxes/{sandbox}/extend"),
            json!({"ttl": "1h"}),
        )
        .await;
    assert_eq!(call.status, 200, "{}", call.body);
    let call = calls.post("/sandboxes", json!({})).await;
    assert_eq!(call.status, 201, "{}", call.body);
    let since = last_heartbeat(api, &worker_id).await;
    eventually(
        "the worker's heartbeats to be stored again",
        Duration::from_secs(10),
        || async { (last_heartbeat(api, &worker_id).await > since).then_some(()) },
    )
    .await;

    // every call that was answered (all but the refusals of the audit log) is in an
    // intact chain
    let (status, verification) = api.get("/audit/verify").await;
    assert_eq!(status, 200, "{verification}");
    assert_eq!(verification["ok"], true, "{verification}");
    let (status, records) = api.get("/audit?limit=100000").await;
    assert_eq!(status, 200, "{records}");
    let recorded: HashSet<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|record| record["request_id"].as_str())
        .collect();
    let answered: Vec<&Call> = calls
        .made
        .iter()
        .filter(|call| !call.refused_by_the_audit_log())
        .collect();
    for call in &answered {
        assert!(
            recorded.contains(call.request_id.as_str()),
            "no audit record of {} (answered {} {})",
            call.request_id,
            call.status,
            call.body
        );
    }
}
