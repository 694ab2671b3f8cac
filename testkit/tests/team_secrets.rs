//! Team secrets: a value set through the API reaches the environment of a sandbox
//! whose template names it, and nothing else: not the control plane's logs at trace
//! level, not the audit log, not any API answer, not the database file (it is sealed
//! at rest). Another team cannot use it; a template naming a missing secret makes no
//! sandbox. (A test binary of its own: it installs the process's log capture.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use berth_testkit::{TestFleet, id_of};

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

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn a_secret_reaches_its_sandbox_and_nowhere_else() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(
            "info,berth_controlplane=trace,berth_worker=trace,berth_pki=trace,berth_testkit=trace",
        )
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let value = format!("pw-{}-{}", std::process::id(), rand_suffix());
    let replaced = format!("{value}-rotated");
    let fleet = TestFleet::builder().workers(1).start().await;
    let api = &fleet.api;
    let mut answers: Vec<Value> = Vec::new();
    let mut keep = |answer: &Value| answers.push(answer.clone());

    let put = |name: &str, body: Value| {
        api.request(reqwest::Method::PUT, &format!("/secrets/{name}"))
            .json(&body)
    };
    let (status, set) = api.send(put("DB_PASSWORD", json!({"value": value}))).await;
    assert_eq!(status, 201, "{set}");
    assert_eq!(set["name"], "DB_PASSWORD");
    keep(&set);
    // bad names and bodies are refused without echoing the value
    let (status, err) = api.send(put("1BAD", json!({"value": value}))).await;
    assert_eq!(status, 400, "{err}");
    keep(&err);
    let (status, err) = api
        .send(put("OTHER", json!({"value": value, "extra": 1})))
        .await;
    assert_eq!(status, 400, "{err}");
    keep(&err);

    let (status, listed) = api.get("/secrets").await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    keep(&listed);

    let (status, template) = api
        .post(
            "/templates",
            json!({"name": "db-client", "env": {"DB_USER": "app"}, "secrets": ["DB_PASSWORD"]}),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    keep(&template);
    let sandbox = api.create_sandbox(json!({"template": "db-client"})).await;
    keep(&sandbox);
    let id = id_of(&sandbox);
    // the one place the value shows: the sandbox's own environment
    let (status, out) = api
        .exec(&id, json!({"command": "echo $DB_USER:$DB_PASSWORD"}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], format!("app:{value}\n"), "{out}");

    // a new value reaches sandboxes made after it; the running one keeps its own
    let (status, again) = api
        .send(put("DB_PASSWORD", json!({"value": replaced})))
        .await;
    assert_eq!(status, 200, "{again}");
    keep(&again);
    let newer = api.create_sandbox(json!({"template": "db-client"})).await;
    keep(&newer);
    let (_, out) = api
        .exec(&id_of(&newer), json!({"command": "echo $DB_PASSWORD"}))
        .await;
    assert_eq!(out["stdout"], format!("{replaced}\n"), "{out}");

    // another team has no such secret: its template cannot make a sandbox
    api.create_team("blue", json!({})).await;
    let blue = api.with_key(&api.team_key("blue", &["read", "write", "exec"]).await);
    let (status, _) = blue
        .post(
            "/templates",
            json!({"name": "steal", "secrets": ["DB_PASSWORD"]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, err) = blue.post("/sandboxes", json!({"template": "steal"})).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("has no secret DB_PASSWORD"),
        "{err}"
    );
    keep(&err);
    assert_eq!(blue.get("/secrets").await.1, json!([]));
    assert_eq!(blue.delete("/secrets/DB_PASSWORD").await.0, 404);

    // every other answer a client could read
    for path in [
        "/sandboxes".to_owned(),
        format!("/sandboxes/{id}"),
        "/templates".to_owned(),
        "/templates/db-client".to_owned(),
        "/status".to_owned(),
        "/audit?limit=1000".to_owned(),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        keep(&body);
    }
    let (status, audit) = api.get("/audit?limit=1000").await;
    assert_eq!(status, 200);
    assert!(
        audit.to_string().contains("secret=DB_PASSWORD created"),
        "{audit}"
    );

    // deleted: the template makes no sandbox until it is set again
    let (status, _) = api.delete("/secrets/DB_PASSWORD").await;
    assert_eq!(status, 200);
    let (status, err) = api
        .post("/sandboxes", json!({"template": "db-client"}))
        .await;
    assert_eq!(status, 400, "{err}");
    keep(&err);

    // sealed at rest: not in the database, its WAL or anything beside them
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&fleet.cp.config.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        files.iter().any(|(path, _)| path.ends_with("berth.db")),
        "the database is in the data dir"
    );
    fleet.stop().await;
    let logs = captured.0.lock().unwrap().clone();
    assert!(contains(&logs, "sandbox created"), "logging was captured");
    for secret in [&value, &replaced] {
        assert!(!contains(&logs, secret), "a secret's value is in the logs");
        for answer in &answers {
            assert!(
                !answer.to_string().contains(secret.as_str()),
                "in an answer: {answer}"
            );
        }
        for (path, bytes) in &files {
            assert!(!contains(bytes, secret), "in {}", path.display());
        }
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:09}")
}
