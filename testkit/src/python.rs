//! A Python environment for tests that drive Berth from real Python clients (grpcio
//! with stubs generated from the repository's protos, `websockets`): one venv cached
//! under `$CARGO_TARGET_DIR/grpcio-venv` (or `target/`), made with pip on first use.
//! Without python3, venv or pip a test prints `SKIPPED …` and passes, unless
//! `BERTH_REQUIRE_PYTHON=1` (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the venv holds.
const PACKAGES: [&str; 5] = [
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
    "websockets",
];
const IMPORTS: &str =
    "import grpc, grpc_tools, grpc_health.v1, grpc_reflection.v1alpha, websockets";

pub fn workspace() -> PathBuf {
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

/// Runs `command`; its stdout, or its output when it fails.
pub fn run(command: &mut Command) -> Result<String, String> {
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

/// The venv's python with the packages installed, or why there is none. Blocking:
/// call it from `spawn_blocking`.
pub fn python() -> Result<PathBuf, String> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", IMPORTS])
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
        return Err(format!("{} lacks the packages after pip", python.display()));
    }
    Ok(python)
}

/// Generates the Python stubs of the public API's protos into `out`.
pub fn generate_stubs(python: &Path, out: &Path) -> Result<(), String> {
    let protos = workspace().join("proto");
    let mut protoc = Command::new(python);
    protoc
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&protos)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()));
    for proto in ["types", "sessions", "ports", "sandboxes", "admin"] {
        protoc.arg(protos.join(format!("berth/v1/{proto}.proto")));
    }
    run(&mut protoc).map(drop)
}

/// Fails the test under `BERTH_REQUIRE_PYTHON=1`, else says it skipped.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("BERTH_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{test}: BERTH_REQUIRE_PYTHON=1 but {why}");
    }
    eprintln!("SKIPPED {test}: no python environment: {why}");
}
