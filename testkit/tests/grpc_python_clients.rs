//! A real, generated Python grpcio client against the API port: `grpc.health.v1`
//! Check, server reflection (v1 and v1alpha) and a Berth call through stubs that
//! `grpc_tools.protoc` generates from the repository's protos
//! (`testkit/python/grpc_health_reflection.py`).
//!
//! The Python environment is the testkit's (`berth_testkit::python`).

use std::process::Command;

use berth_testkit::TestFleet;
use berth_testkit::python::{generate_stubs, python, run, skip_or_fail, workspace};

#[tokio::test]
async fn a_generated_python_client_checks_health_reflects_and_calls_berth() {
    const TEST: &str = "a_generated_python_client_checks_health_reflects_and_calls_berth";
    let python = match tokio::task::spawn_blocking(python).await.unwrap() {
        Ok(python) => python,
        Err(why) => return skip_or_fail(TEST, &why),
    };
    let generated = tempfile::tempdir().unwrap();
    generate_stubs(&python, generated.path()).expect("grpc_tools.protoc generates the client");

    let fleet = TestFleet::start().await;
    let address = fleet.cp.api_url().trim_start_matches("http://").to_owned();
    let script = workspace().join("testkit/python/grpc_health_reflection.py");
    let key = fleet.cp.admin_key.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new(&python)
            .arg(script)
            .arg(address)
            .arg(key)
            .env("PYTHONPATH", generated.path()))
    })
    .await
    .unwrap();
    let out = out.unwrap_or_else(|err| panic!("the python client failed: {err}"));
    assert!(out.contains("health: SERVING"), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    let (_, sandboxes) = fleet.api.get("/sandboxes").await;
    assert_eq!(
        sandboxes,
        serde_json::json!([]),
        "the python client's sandbox is gone"
    );
    fleet.stop().await;
}
