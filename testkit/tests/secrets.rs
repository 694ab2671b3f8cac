//! Secrets never reach the logs: with our crates logging at trace level, an enrollment,
//! API calls with keys (right and wrong), a token created through the API and a
//! sandbox's life leave no API key, join token or worker token in the output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use berth_testkit::{TestFleet, eventually};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_and_tokens_never_appear_in_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(
            "info,berth_controlplane=trace,berth_worker=trace,berth_pki=trace,berth_testkit=trace",
        )
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let mut fleet = TestFleet::builder().workers(0).start().await;
    let (status, issued) = fleet
        .api
        .post("/tokens", json!({"ttl": "5m", "worker_id": "s1"}))
        .await;
    assert_eq!(status, 201);
    let join_token = issued["token"].as_str().unwrap().to_owned();
    let worker = fleet
        .add_worker(|config| {
            config.id = Some("s1".into());
            config.join_token = Some(join_token.clone());
        })
        .await;
    let api = &fleet.api;
    eventually("online", Duration::from_secs(10), || async {
        (api.get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let worker_token = berth_worker::StoredIdentity::load(&fleet.worker_dir(worker))
        .unwrap()
        .unwrap()
        .worker_token;
    let wrong_key = "berth_000000000000_".to_owned() + &"f".repeat(64);
    let (status, _) = api
        .send(
            api.http
                .get(format!("{}/workers", api.base))
                .header("X-API-Key", &wrong_key),
        )
        .await;
    assert_eq!(status, 401);
    let sandbox = api.create_sandbox(json!({})).await;
    let id = sandbox["id"].as_str().unwrap();
    api.post(
        &format!("/sandboxes/{id}/exec"),
        json!({"command": "echo hi"}),
    )
    .await;
    api.delete(&format!("/sandboxes/{id}")).await;
    let api = api.clone();
    fleet.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("worker enrolled"), "logging was captured");
    let admin_secret = cp_secret(&api.key);
    for (what, secret) in [
        ("admin key", api.key.as_str()),
        ("admin key secret", admin_secret.as_str()),
        ("wrong key", wrong_key.as_str()),
        ("join token", join_token.as_str()),
        ("worker token", worker_token.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}

fn cp_secret(key: &str) -> String {
    key.rsplit('_').next().unwrap().to_owned()
}
