//! A real, generated Python grpcio client against the API port: `grpc.health.v1`
//! Check, server reflection (v1 and v1alpha) and a Berth call through stubs that
//! `grpc_tools.protoc` generates from the repository's protos
//! (`testkit/python/grpc_health_reflection.py`).
//!
//! The Python environment is a venv cached under `$CARGO_TARGET_DIR/grpcio-venv` (or
//! `target/`), made with pip on first use. Without python3, venv or pip the test
//! prints `SKIPPED …` and passes, unless `BERTH_REQUIRE_PYTHON=1` (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_testkit::TestFleet;

const PACKAGES: [&str; 4] = [
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit sits in the workspace")
        .to_owned()
}

fn venv_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("grpcio-venv")
}

/// Runs `command`; its output when it fails.
fn run(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(|err| format!("{shown}: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    Err(format!(
        "{shown} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The venv's python with the packages installed, or why there is none.
fn python_with_grpcio() -> Result<PathBuf, String> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let ready = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import grpc, grpc_tools, grpc_health.v1, grpc_reflection.v1alpha",
            ])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    run(Command::new("python3").arg("--version"))?;
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(PACKAGES))?;
    if !ready(&python) {
        return Err(format!(
            "{} lacks the grpc packages after pip",
            python.display()
        ));
    }
    Ok(python)
}

fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("BERTH_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{test}: BERTH_REQUIRE_PYTHON=1 but {why}");
    }
    eprintln!("SKIPPED {test}: no python grpcio environment: {why}");
}

#[tokio::test]
async fn a_generated_python_client_checks_health_reflects_and_calls_berth() {
    const TEST: &str = "a_generated_python_client_checks_health_reflects_and_calls_berth";
    let python = match tokio::task::spawn_blocking(python_with_grpcio)
        .await
        .unwrap()
    {
        Ok(python) => python,
        Err(why) => return skip_or_fail(TEST, &why),
    };
    let generated = tempfile::tempdir().unwrap();
    let protos = workspace().join("proto");
    let mut protoc = Command::new(&python);
    protoc
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&protos)
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()));
    for proto in ["types", "sandboxes", "admin"] {
        protoc.arg(protos.join(format!("berth/v1/{proto}.proto")));
    }
    run(&mut protoc).expect("grpc_tools.protoc generates the client");

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
