//! Interactive sessions from real Python clients against a docker sandbox: the
//! `websockets` package on `GET /api/v1/sandboxes/{id}/exec/ws` and a grpcio client
//! generated from the repository's protos on `berth.v1.Sandboxes/Session`, each
//! running the same cases (`testkit/python/sessions.py`): `cat` echoes stdin and exits
//! 0 after eof; 20 MB with a client that detaches half way and re-attaches from its
//! offset, the sha256 of the whole equal to the one computed in the sandbox; a
//! background session attached 10 s later gets its whole output.
//!
//! Skips visibly without docker or Python (fails instead with `BERTH_REQUIRE_DOCKER=1`
//! / `BERTH_REQUIRE_PYTHON=1`, as CI sets).

use std::process::Command;

use berth_testkit::docker::docker_or_skip;
use berth_testkit::python::{generate_stubs, python, run, skip_or_fail, workspace};
use berth_testkit::{TestFleet, id_of};
use serde_json::json;

#[tokio::test]
async fn python_websocket_and_grpc_clients_drive_sessions_in_a_docker_sandbox() {
    const TEST: &str = "python_websocket_and_grpc_clients_drive_sessions_in_a_docker_sandbox";
    let Some(docker) = docker_or_skip(TEST).await else {
        return;
    };
    let python = match tokio::task::spawn_blocking(python).await.unwrap() {
        Ok(python) => python,
        Err(why) => return skip_or_fail(TEST, &why),
    };
    let generated = tempfile::tempdir().unwrap();
    generate_stubs(&python, generated.path()).expect("grpc_tools.protoc generates the client");

    let fleet = TestFleet::builder().docker(docker).start().await;
    let sandbox = fleet.api.create_sandbox(json!({})).await;
    let sandbox_id = id_of(&sandbox);
    let script = workspace().join("testkit/python/sessions.py");
    let (url, key) = (fleet.cp.api_url(), fleet.cp.admin_key.clone());
    let id = sandbox_id.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new(&python)
            .arg(script)
            .args([url, key, id])
            .env("PYTHONPATH", generated.path()))
    })
    .await
    .unwrap()
    .unwrap_or_else(|err| panic!("the python clients failed: {err}"));
    eprintln!("{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    assert!(out.contains("websocket: detached at"), "{out}");
    assert!(out.contains("grpc: detached at"), "{out}");
    fleet.api.delete(&format!("/sandboxes/{sandbox_id}")).await;
    fleet.stop().await;
}
